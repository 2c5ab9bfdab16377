"""Shared fixtures. Tests marked ``bpf`` load real programs into the running
kernel and are skipped, with the reason, where that is not possible."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from syslrn.collect.privileges import BTF_PATH, missing_capabilities


def _bpf_unavailable() -> str | None:
    if missing_capabilities():
        return "needs CAP_BPF and CAP_PERFMON (run the tests as root)"
    if not BTF_PATH.exists():
        return f"needs kernel BTF at {BTF_PATH}"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _bpf_unavailable()
    if reason is None:
        return
    # CI runs as root on a kernel with BTF, where nothing here is skipped.
    if os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "bpf" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def trace_path(tmp_path: Path) -> Path:
    return tmp_path / "run.parquet"
