"""Checks that the process may load and attach BPF programs."""

from __future__ import annotations

from pathlib import Path

from syslrn.errors import BpfError

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

BTF_PATH = Path("/sys/kernel/btf/vmlinux")


def effective_capabilities(status: Path = Path("/proc/self/status")) -> int:
    """Return the effective capability mask of this process."""
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise BpfError(f"{status} has no CapEff line; cannot check capabilities")


def missing_capabilities(mask: int | None = None) -> list[str]:
    """Return the names of the capabilities that loading tracing programs needs
    and this process lacks. CAP_SYS_ADMIN replaces both, as on kernels
    older than 5.8."""
    mask = effective_capabilities() if mask is None else mask
    if mask & (1 << CAP_SYS_ADMIN):
        return []
    return [
        name
        for name, bit in (("CAP_BPF", CAP_BPF), ("CAP_PERFMON", CAP_PERFMON))
        if not mask & (1 << bit)
    ]


def check_bpf_allowed(command: str = "syslrn") -> None:
    """Raise BpfError naming what is missing: capabilities or kernel BTF."""
    missing = missing_capabilities()
    if missing:
        raise BpfError(
            f"missing capability {' and '.join(missing)}: {command} loads eBPF "
            f"programs; run it as root (sudo {command} ...) or grant "
            "cap_bpf,cap_perfmon",
            exit_code=77,
        )
    if not BTF_PATH.exists():
        raise BpfError(
            f"{BTF_PATH} not found: the kernel exposes no BTF, which CO-RE "
            "programs need; boot a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        )
