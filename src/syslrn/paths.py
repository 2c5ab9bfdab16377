"""Checks of output paths, shared by the commands and the trace writer."""

from __future__ import annotations

import os
from pathlib import Path

from syslrn.errors import SyslrnError


def check_parent_writable(path: Path, error: type[SyslrnError] = SyslrnError) -> None:
    """Raise ``error`` unless the directory that is to contain ``path`` exists
    and is writable.

    A missing directory is not created, because that could hide a mistyped
    path.
    """
    parent = path.parent
    if not parent.is_dir():
        raise error(
            f"output {path}: directory {parent} does not exist; create it first"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(
            f"output {path}: directory {parent} is not writable; "
            "choose another output path"
        )
