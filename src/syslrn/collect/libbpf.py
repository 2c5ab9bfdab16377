"""A small typed binding over the system libbpf (libbpf.so.1), with ctypes.

It covers what syslrn needs: open a CO-RE object, size its maps and set its
read-only configuration before load, choose which programs load, load with
the verifier's log kept for errors, attach, read and write maps, read
program info, and run a BPF iterator.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from syslrn.errors import BpfError

log = logging.getLogger(__name__)

_LIBBPF_NAMES = ("libbpf.so.1", "libbpf.so")


def _load_libbpf() -> ctypes.CDLL:
    for name in _LIBBPF_NAMES:
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
    raise BpfError(
        "libbpf.so.1 not found; install it with 'apt-get install libbpf1' "
        "(scripts/setup does)"
    )


_lib: ctypes.CDLL | None = None
_libc = ctypes.CDLL("libc.so.6", use_errno=True)

_PRINT_FN = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p
)

# libbpf's messages of the current load, the verifier's log among them.
_messages: list[str] = []


# One libbpf message contains a whole verifier log, whose last lines matter
# most; a va_list is used once, so the buffer must fit the message.
_print_buffer = ctypes.create_string_buffer(4 << 20)


@_PRINT_FN
def _print_callback(level: int, fmt: bytes, args: int) -> int:
    _libc.vsnprintf(
        _print_buffer, ctypes.sizeof(_print_buffer), fmt, ctypes.c_void_p(args)
    )
    text = _print_buffer.value.decode(errors="replace")
    _messages.append(text)
    if len(_messages) > 5000:
        del _messages[:1000]
    return 0


def _signature(lib: ctypes.CDLL, name: str, restype, *argtypes) -> None:
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


def lib() -> ctypes.CDLL:
    """Return the loaded libbpf, with function signatures declared."""
    global _lib
    if _lib is not None:
        return _lib
    libbpf = _load_libbpf()
    vp, cp, i, u32, sz = (
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint32,
        ctypes.c_size_t,
    )
    _signature(libbpf, "libbpf_set_print", vp, _PRINT_FN)
    _signature(libbpf, "bpf_object__open_file", vp, cp, vp)
    _signature(libbpf, "bpf_object__load", i, vp)
    _signature(libbpf, "bpf_object__close", None, vp)
    _signature(libbpf, "bpf_object__next_map", vp, vp, vp)
    _signature(libbpf, "bpf_object__next_program", vp, vp, vp)
    _signature(libbpf, "bpf_object__find_map_by_name", vp, vp, cp)
    _signature(libbpf, "bpf_object__find_program_by_name", vp, vp, cp)
    _signature(libbpf, "bpf_map__name", cp, vp)
    _signature(libbpf, "bpf_map__fd", i, vp)
    _signature(libbpf, "bpf_map__set_max_entries", i, vp, u32)
    _signature(libbpf, "bpf_map__max_entries", u32, vp)
    _signature(libbpf, "bpf_map__initial_value", vp, vp, ctypes.POINTER(sz))
    _signature(libbpf, "bpf_map__key_size", u32, vp)
    _signature(libbpf, "bpf_map__value_size", u32, vp)
    _signature(libbpf, "bpf_program__name", cp, vp)
    _signature(libbpf, "bpf_program__section_name", cp, vp)
    _signature(libbpf, "bpf_program__set_autoload", i, vp, ctypes.c_bool)
    _signature(libbpf, "bpf_program__autoload", ctypes.c_bool, vp)
    _signature(libbpf, "bpf_program__fd", i, vp)
    _signature(libbpf, "bpf_program__insn_cnt", sz, vp)
    _signature(libbpf, "bpf_program__attach", vp, vp)
    _signature(libbpf, "bpf_program__attach_iter", vp, vp, vp)
    _signature(libbpf, "bpf_program__attach_tracepoint", vp, vp, cp, cp)
    _signature(libbpf, "bpf_link__destroy", i, vp)
    _signature(libbpf, "bpf_link__fd", i, vp)
    _signature(libbpf, "bpf_iter_create", i, i)
    _signature(libbpf, "bpf_map_lookup_elem", i, i, vp, vp)
    _signature(libbpf, "bpf_map_update_elem", i, i, vp, vp, ctypes.c_uint64)
    _signature(libbpf, "bpf_map_delete_elem", i, i, vp)
    _signature(libbpf, "bpf_map_get_next_key", i, i, vp, vp)
    _signature(libbpf, "bpf_obj_get_info_by_fd", i, i, vp, ctypes.POINTER(u32))
    _signature(libbpf, "libbpf_num_possible_cpus", i)
    _libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, vp]
    libbpf.libbpf_set_print(_print_callback)
    _lib = libbpf
    return libbpf


class ProgInfo(ctypes.Structure):
    """struct bpf_prog_info of linux/bpf.h, up to the fields syslrn reads."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
    ]


def _errno_error(action: str, err: int | None = None) -> BpfError:
    err = ctypes.get_errno() if err is None else err
    err = abs(err)
    error = BpfError(
        f"{action}: {os.strerror(err)} (errno {errno.errorcode.get(err, err)})"
    )
    error.errno = err
    return error


def num_possible_cpus() -> int:
    count = lib().libbpf_num_possible_cpus()
    if count <= 0:
        raise _errno_error("libbpf could not count the possible CPUs", count)
    return count


class Map:
    """A map of a loaded object, read and written with fixed-size bytes."""

    def __init__(self, ptr: int):
        self._ptr = ptr
        self.name = lib().bpf_map__name(ptr).decode()

    @property
    def fd(self) -> int:
        return lib().bpf_map__fd(self._ptr)

    @property
    def key_size(self) -> int:
        return lib().bpf_map__key_size(self._ptr)

    @property
    def value_size(self) -> int:
        return lib().bpf_map__value_size(self._ptr)

    @property
    def max_entries(self) -> int:
        return lib().bpf_map__max_entries(self._ptr)

    def set_max_entries(self, entries: int) -> None:
        """Resize the map; only before the object is loaded."""
        if lib().bpf_map__set_max_entries(self._ptr, entries) != 0:
            raise _errno_error(f"map {self.name}: cannot set max_entries={entries}")

    def initial_value(self) -> ctypes.Array:
        """Return the writable initial data of a global-data map (e.g. .rodata)."""
        size = ctypes.c_size_t()
        ptr = lib().bpf_map__initial_value(self._ptr, ctypes.byref(size))
        if not ptr:
            raise BpfError(f"map {self.name} has no initial value")
        return (ctypes.c_char * size.value).from_address(ptr)

    def mmap(self) -> mmap.mmap:
        """Map a loaded mappable map (``.bss``, ``.data``) into memory.

        The programs update that memory as user space reads it. libbpf
        1.1, which Debian 12 has, does not map it on load, so it is mapped
        here.
        """
        page = mmap.PAGESIZE
        size = (self.value_size * self.max_entries + page - 1) // page * page
        try:
            return mmap.mmap(
                self.fd,
                size,
                flags=mmap.MAP_SHARED,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
            )
        except OSError as exc:
            raise BpfError(f"map {self.name}: mmap failed: {exc}") from exc

    def lookup(self, key: bytes, value_size: int | None = None) -> bytes | None:
        """Return the value stored at ``key``, or None when absent.

        ``value_size`` must be given for per-CPU maps: value size x CPUs.
        """
        size = value_size or self.value_size
        key_buf = ctypes.create_string_buffer(key, len(key))
        value = ctypes.create_string_buffer(size)
        if lib().bpf_map_lookup_elem(self.fd, key_buf, value) != 0:
            err = ctypes.get_errno()
            if err == errno.ENOENT:
                return None
            raise _errno_error(f"map {self.name}: lookup failed", err)
        return value.raw

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        key_buf = ctypes.create_string_buffer(key, len(key))
        value_buf = ctypes.create_string_buffer(value, len(value))
        if lib().bpf_map_update_elem(self.fd, key_buf, value_buf, flags) != 0:
            raise _errno_error(f"map {self.name}: update failed")

    def delete(self, key: bytes) -> bool:
        key_buf = ctypes.create_string_buffer(key, len(key))
        return lib().bpf_map_delete_elem(self.fd, key_buf) == 0

    def keys(self) -> Iterator[bytes]:
        size = self.key_size
        current = None
        following = ctypes.create_string_buffer(size)
        while True:
            prev = (
                None if current is None else ctypes.create_string_buffer(current, size)
            )
            if lib().bpf_map_get_next_key(self.fd, prev, following) != 0:
                return
            current = following.raw
            yield current


class Program:
    """A program of an object: its name, section, load switch and info."""

    def __init__(self, ptr: int):
        self._ptr = ptr
        self.name = lib().bpf_program__name(ptr).decode()
        self.section = lib().bpf_program__section_name(ptr).decode()

    @property
    def autoload(self) -> bool:
        return bool(lib().bpf_program__autoload(self._ptr))

    @autoload.setter
    def autoload(self, value: bool) -> None:
        if lib().bpf_program__set_autoload(self._ptr, value) != 0:
            raise _errno_error(f"program {self.name}: cannot change autoload")

    @property
    def fd(self) -> int:
        return lib().bpf_program__fd(self._ptr)

    @property
    def elf_insn_count(self) -> int:
        """Instructions in the object file, before CO-RE and the verifier."""
        return int(lib().bpf_program__insn_cnt(self._ptr))

    def info(self) -> ProgInfo:
        """Return the kernel's bpf_prog_info of the loaded program."""
        info = ProgInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if lib().bpf_obj_get_info_by_fd(
            self.fd, ctypes.byref(info), ctypes.byref(size)
        ):
            raise _errno_error(f"program {self.name}: cannot read its info")
        return info

    @property
    def insn_count(self) -> int:
        """Instructions of the loaded program, as the kernel translated it."""
        return self.info().xlated_prog_len // 8


class IterLinkInfo(ctypes.Structure):
    """The task member of union bpf_iter_link_info, padded to the union's size."""

    _fields_ = [
        ("tid", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("pid_fd", ctypes.c_uint32),
        ("_pad", ctypes.c_uint8 * 12),
    ]


class IterAttachOpts(ctypes.Structure):
    """struct bpf_iter_attach_opts of libbpf.h."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("link_info", ctypes.c_void_p),
        ("link_info_len", ctypes.c_uint32),
    ]


class Link:
    """An attachment of a program; destroyed on :meth:`destroy`."""

    def __init__(self, ptr: int, program: Program, hook: str | None = None):
        self._ptr = ptr
        self.program = program
        self.hook = hook or program.section

    @property
    def fd(self) -> int:
        return lib().bpf_link__fd(self._ptr)

    def destroy(self) -> None:
        if self._ptr:
            lib().bpf_link__destroy(self._ptr)
            self._ptr = 0


def _tracefs_ready() -> None:
    """Mount tracefs when absent: tracepoint programs attach through it."""
    events = Path("/sys/kernel/tracing/events")
    if events.exists() or Path("/sys/kernel/debug/tracing/events").exists():
        return
    result = os.system("mount -t tracefs nodev /sys/kernel/tracing >/dev/null 2>&1")
    if result != 0 or not events.exists():
        raise BpfError(
            "tracefs is not mounted and mounting it failed; run "
            "'mount -t tracefs nodev /sys/kernel/tracing' as root"
        )


class BpfObject:
    """A CO-RE object file opened, configured, loaded and attached.

    Parameters
    ----------
    path : path-like
        The ``.bpf.o`` file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._links: list[Link] = []
        _messages.clear()
        ptr = lib().bpf_object__open_file(os.fsencode(self.path), None)
        if not ptr:
            raise _errno_error(f"libbpf failed to open {self.path}")
        self._ptr = ptr
        self.loaded = False

    def maps(self) -> list[Map]:
        result, ptr = [], None
        while True:
            ptr = lib().bpf_object__next_map(self._ptr, ptr)
            if not ptr:
                return result
            result.append(Map(ptr))

    def programs(self) -> list[Program]:
        result, ptr = [], None
        while True:
            ptr = lib().bpf_object__next_program(self._ptr, ptr)
            if not ptr:
                return result
            result.append(Program(ptr))

    def map(self, name: str) -> Map:
        ptr = lib().bpf_object__find_map_by_name(self._ptr, name.encode())
        if not ptr:
            raise BpfError(f"{self.path.name}: no map named {name}")
        return Map(ptr)

    def program(self, name: str) -> Program:
        ptr = lib().bpf_object__find_program_by_name(self._ptr, name.encode())
        if not ptr:
            raise BpfError(f"{self.path.name}: no program named {name}")
        return Program(ptr)

    def rodata(self) -> ctypes.Array:
        """Return the writable ``.rodata`` image, the const volatile globals."""
        for m in self.maps():
            if m.name.endswith(".rodata"):
                return m.initial_value()
        raise BpfError(f"{self.path.name}: no .rodata section")

    def set_rodata(self, config: ctypes.Structure) -> None:
        """Copy ``config`` to the start of ``.rodata``, before load.

        The object's only read-only global is one config struct, which
        ``config`` mirrors.
        """
        rodata = self.rodata()
        size = ctypes.sizeof(config)
        if len(rodata) < size:
            raise BpfError(
                f"{self.path.name}: .rodata has {len(rodata)} bytes, but the "
                f"config needs {size}; rebuild the BPF objects"
            )
        ctypes.memmove(rodata, ctypes.addressof(config), size)

    def select_programs(self, names: Iterable[str]) -> None:
        """Load only the programs named; the others stay out of the kernel."""
        wanted = set(names)
        known = {p.name for p in self.programs()}
        unknown = wanted - known
        if unknown:
            raise BpfError(f"{self.path.name}: no programs named {sorted(unknown)}")
        for prog in self.programs():
            prog.autoload = prog.name in wanted

    def load(self) -> None:
        """Load into the kernel; on failure, show the verifier's last lines."""
        _messages.clear()
        err = lib().bpf_object__load(self._ptr)
        if err != 0:
            raise BpfError(self._load_failure(err))
        self.loaded = True
        log.debug("loaded %s", self.path.name)

    def _load_failure(self, err: int) -> str:
        text = "".join(_messages)
        match = re.search(r"prog '([^']+)': BPF program load failed", text)
        failed = match.group(1) if match else None
        # The verifier's log sits between libbpf's BEGIN and END markers;
        # its last lines name what it rejected.
        log_lines = []
        if "-- BEGIN PROG LOAD LOG --" in text:
            body = text.split("-- BEGIN PROG LOAD LOG --", 1)[1]
            body = body.split("-- END PROG LOAD LOG --", 1)[0]
            log_lines = [line for line in body.splitlines() if line.strip()]
        else:
            log_lines = [line for line in text.splitlines() if line.strip()]
        tail = "\n  ".join(log_lines[-10:])
        where = f"program {failed}" if failed else "an unnamed step"
        return (
            f"loading {self.path.name} failed at {where}: {os.strerror(abs(err))}; "
            f"the verifier's last lines:\n  {tail}"
        )

    def attach(self, program: Program, hook: str | None = None) -> Link:
        """Attach one loaded program at ``hook``, by default the hook its
        section names. Another hook must be a tracepoint of the same
        layout, as ``tracepoint/CATEGORY/NAME``."""
        hook = hook or program.section
        if hook.startswith("tracepoint/"):
            _tracefs_ready()
        if hook == program.section:
            ptr = lib().bpf_program__attach(program._ptr)
        else:
            kind, _, rest = hook.partition("/")
            category, _, name = rest.partition("/")
            if kind != "tracepoint" or not name:
                raise BpfError(
                    f"cannot attach {program.name} at {hook}: only a program's own "
                    "section or tracepoint/CATEGORY/NAME is supported"
                )
            ptr = lib().bpf_program__attach_tracepoint(
                program._ptr, category.encode(), name.encode()
            )
        if not ptr:
            raise _errno_error(f"attaching {program.name} ({hook}) failed")
        link = Link(ptr, program, hook)
        self._links.append(link)
        log.debug("attached %s at %s", program.name, hook)
        return link

    def attach_all(self, skip_sections: tuple[str, ...] = ("iter/",)) -> list[Link]:
        """Attach every loaded program, except iterators (run with :meth:`iterate`)."""
        links = []
        for prog in self.programs():
            if not prog.autoload or prog.section.startswith(skip_sections):
                continue
            links.append(self.attach(prog))
        return links

    def iterate(self, program: Program, pid: int | None = None) -> bytes:
        """Run a BPF iterator program once and return what it wrote.

        With ``pid``, a task iterator visits that process's threads only.
        """
        opts = None
        if pid is not None:
            link_info = IterLinkInfo()
            link_info.pid = pid
            opts = IterAttachOpts(
                sz=ctypes.sizeof(IterAttachOpts),
                link_info=ctypes.addressof(link_info),
                link_info_len=ctypes.sizeof(link_info),
            )
            opts_ref = ctypes.byref(opts)
        ptr = lib().bpf_program__attach_iter(program._ptr, opts_ref if opts else None)
        if not ptr:
            raise _errno_error(f"attaching iterator {program.name} failed")
        link = Link(ptr, program)
        try:
            fd = lib().bpf_iter_create(link.fd)
            if fd < 0:
                raise _errno_error(f"creating iterator {program.name} failed", fd)
            chunks = []
            try:
                while True:
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        break
                    chunks.append(chunk)
            finally:
                os.close(fd)
            return b"".join(chunks)
        finally:
            link.destroy()

    def detach(self) -> None:
        for link in self._links:
            link.destroy()
        self._links.clear()

    def close(self) -> None:
        self.detach()
        if self._ptr:
            lib().bpf_object__close(self._ptr)
            self._ptr = 0

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
