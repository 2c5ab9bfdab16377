"""Argument types shared by the commands.

This module imports nothing heavy, because the long-running ``monitor``
command uses it and must stay small in memory.
"""

from __future__ import annotations

import argparse
import math

from syslrn.collect.trigger import parse_trigger
from syslrn.errors import SyslrnError


def positive_seconds(text: str) -> float:
    """Parse a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: give a positive number of seconds"
        )
    return value


def non_negative_seconds(text: str) -> float:
    """Parse a finite number of seconds of 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: give a number of seconds of 0 or more"
        )
    return value


def trigger_text(text: str) -> str:
    """Check a ``tcp:PORT`` or ``unix:PATH`` trigger; return it unchanged."""
    try:
        parse_trigger(text)
    except SyslrnError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
