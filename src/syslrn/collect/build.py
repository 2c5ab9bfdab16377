"""Build the BPF objects: vmlinux.h from the running kernel's BTF, then clang.

Objects are CO-RE, so one build runs on other kernels with BTF too. They are
cached per kernel release under ``$SYSLRN_BPF_DIR`` (default
``~/.cache/syslrn/bpf/<release>``), named by a digest of their sources, so
that two checkouts with different sources never load each other's objects.

Run ``python -m syslrn.collect.build`` to build ahead of time, as
scripts/setup does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from syslrn.errors import BpfError

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).parent / "bpf"
BTF_PATH = Path("/sys/kernel/btf/vmlinux")

# clang's BPF target needs the architecture for the syscall-argument macros.
_TARGET_ARCH = {
    "x86_64": "x86",
    "aarch64": "arm64",
    "riscv64": "riscv",
    "s390x": "s390",
}


def cache_dir() -> Path:
    configured = os.environ.get("SYSLRN_BPF_DIR")
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "syslrn" / "bpf" / platform.release()


def _require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BpfError(
            f"{name} not found; it builds the BPF programs. Install it with "
            "scripts/setup or 'apt-get install clang llvm libbpf-dev bpftool'"
        )
    return path


def vmlinux_header(out_dir: Path) -> Path:
    """Generate vmlinux.h from the running kernel's BTF, once per kernel."""
    header = out_dir / "vmlinux.h"
    if header.exists() and header.stat().st_size > 0:
        return header
    if not BTF_PATH.exists():
        raise BpfError(
            f"{BTF_PATH} not found: this kernel exposes no BTF, which CO-RE needs; "
            "run a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        )
    bpftool = _require_tool("bpftool")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [bpftool, "btf", "dump", "file", str(BTF_PATH), "format", "c"],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise BpfError(
            f"bpftool failed to dump {BTF_PATH}: {result.stderr.decode().strip()}"
        )
    tmp = header.with_suffix(".tmp")
    tmp.write_bytes(result.stdout)
    tmp.replace(header)
    log.info("generated %s", header)
    return header


#: Objects kept per program name. Older builds, of other sources, are removed.
KEEP_BUILDS = 8


def _digest(sources: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _prune(out_dir: Path, name: str) -> None:
    builds = sorted(
        out_dir.glob(f"{name}.*.bpf.o"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for old in builds[KEEP_BUILDS:]:
        old.unlink(missing_ok=True)


def build_object(name: str) -> Path:
    """Return the path of the BPF object ``name`` (e.g. ``record``), building it
    first when no object of its current sources is cached."""
    source = SOURCE_DIR / f"{name}.bpf.c"
    if not source.exists():
        raise BpfError(f"BPF source {source} not found")
    out_dir = cache_dir()
    headers = sorted(SOURCE_DIR.glob("*.h"))
    obj = out_dir / f"{name}.{_digest([source, *headers])}.bpf.o"
    if obj.exists():
        return obj

    header = vmlinux_header(out_dir)
    clang = _require_tool("clang")
    arch = _TARGET_ARCH.get(platform.machine(), platform.machine())
    tmp = obj.with_suffix(f".{os.getpid()}.tmp")
    command = [
        clang,
        "-O2",
        "-g",
        "-target",
        "bpf",
        f"-D__TARGET_ARCH_{arch}",
        "-Wall",
        "-Wno-unused-function",
        "-I",
        str(header.parent),
        "-I",
        str(SOURCE_DIR),
        "-c",
        str(source),
        "-o",
        str(tmp),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BpfError(f"clang failed to build {source.name}:\n{result.stderr.strip()}")
    tmp.replace(obj)
    log.info("built %s", obj)
    _prune(out_dir, name)
    return obj


def build_all() -> list[Path]:
    """Build every BPF source of the package."""
    names = sorted(p.name.removesuffix(".bpf.c") for p in SOURCE_DIR.glob("*.bpf.c"))
    return [build_object(name) for name in names]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for path in build_all():
            print(path)
    except BpfError as exc:
        print(f"syslrn: error: {exc}", file=sys.stderr)
        sys.exit(2)
