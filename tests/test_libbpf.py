"""The libbpf binding on real objects: load errors, program info, maps."""

from __future__ import annotations

import struct
import subprocess

import pytest

from syslrn.collect import build
from syslrn.collect.libbpf import BpfObject
from syslrn.errors import BpfError

pytestmark = pytest.mark.bpf

# Reads a map value without the NULL check the verifier insists on.
REJECTED_SOURCE = """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} values SEC(".maps");
SEC("tracepoint/syscalls/sys_enter_getpid")
int unchecked_lookup(void *ctx)
{
    __u32 key = 0;
    __u64 *value = bpf_map_lookup_elem(&values, &key);
    return *value;
}
"""


def _compile(tmp_path, source):
    src = tmp_path / "prog.bpf.c"
    src.write_text(source)
    obj = tmp_path / "prog.bpf.o"
    header_dir = build.vmlinux_header(build.cache_dir()).parent
    subprocess.run(
        [
            "clang",
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-I",
            str(header_dir),
            "-c",
            str(src),
            "-o",
            str(obj),
        ],
        check=True,
    )
    return obj


def test_verifier_rejection_names_program(tmp_path):
    obj = BpfObject(_compile(tmp_path, REJECTED_SOURCE))
    with pytest.raises(BpfError) as err:
        obj.load()
    obj.close()
    message = str(err.value)
    assert "failed at program unchecked_lookup: Permission denied" in message
    # The verifier's own words about the NULL pointer are shown.
    assert "map_value_or_null" in message


def test_recorder_object_loads_with_program_info():
    with BpfObject(build.build_object("record")) as obj:
        obj.select_programs(["handle_fork", "handle_exec"])
        obj.load()
        fork = obj.program("handle_fork")
        assert fork.insn_count > 0
        assert fork.info().type != 0
        assert obj.program("handle_exit").autoload is False


def test_hash_map_update_lookup_delete():
    with BpfObject(build.build_object("record")) as obj:
        obj.select_programs(["handle_fork"])
        obj.load()
        drivers = obj.map("driver_pids")
        key = struct.pack("<I", 4242)
        assert drivers.lookup(key) is None
        drivers.update(key, b"\x01")
        assert drivers.lookup(key) == b"\x01"
        assert list(drivers.keys()) == [key]
        assert drivers.delete(key)
        assert drivers.lookup(key) is None


def test_unknown_program_selection_rejected():
    with (
        BpfObject(build.build_object("record")) as obj,
        pytest.raises(BpfError, match="no programs named"),
    ):
        obj.select_programs(["no_such_program"])
