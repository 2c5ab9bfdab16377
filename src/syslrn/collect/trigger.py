"""The request trigger: the listening socket whose accepted connections are
counted as requests, given as ``tcp:PORT`` or ``unix:PATH``."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

from syslrn.errors import SyslrnError

TRIGGER_NONE = 0
TRIGGER_TCP = 1
TRIGGER_UNIX = 2

UNIX_PATH_MAX = 108


@dataclass(frozen=True)
class Trigger:
    """A parsed trigger. ``path`` is a unix socket path; a leading ``@`` names
    an abstract socket."""

    kind: int
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == TRIGGER_TCP:
            return f"tcp:{self.port}"
        return f"unix:{self.path}"

    def kernel_path(self) -> bytes:
        """Return the path as the kernel stores it in the socket's address.

        A path name carries its terminating NUL; an abstract name starts with
        a NUL byte instead of ``@`` and has no terminator.
        """
        if self.path.startswith("@"):
            return b"\0" + self.path[1:].encode()
        return self.path.encode() + b"\0"


def set_trigger(config: ctypes.Structure, trigger: Trigger | None) -> None:
    """Write ``trigger`` into the trigger fields of a BPF object's config.

    ``config`` is a ctypes mirror of a struct with ``trigger_kind``,
    ``trigger_port``, ``trigger_path`` and ``trigger_path_len``.
    """
    config.trigger_kind = TRIGGER_NONE if trigger is None else trigger.kind
    if trigger is None:
        return
    config.trigger_port = trigger.port
    path = trigger.kernel_path() if trigger.kind == TRIGGER_UNIX else b""
    # Assigning bytes to a c_char array stops at the first NUL, and an
    # abstract name starts with one, so the bytes are copied instead.
    offset = type(config).trigger_path.offset
    ctypes.memmove(ctypes.addressof(config) + offset, path, len(path))
    config.trigger_path_len = len(path)


def parse_trigger(text: str) -> Trigger:
    """Parse ``tcp:PORT`` or ``unix:PATH``; raise SyslrnError naming the value."""
    family, sep, rest = text.partition(":")
    if not sep or not rest:
        raise SyslrnError(f"invalid trigger {text!r}: expected tcp:PORT or unix:PATH")
    if family == "tcp":
        if not (rest.isascii() and rest.isdigit()) or not 0 < int(rest) < 65536:
            raise SyslrnError(
                f"invalid trigger {text!r}: the port must be an integer in 1..65535"
            )
        return Trigger(TRIGGER_TCP, port=int(rest))
    if family == "unix":
        trigger = Trigger(TRIGGER_UNIX, path=rest)
        if len(trigger.kernel_path()) > UNIX_PATH_MAX:
            raise SyslrnError(
                f"invalid trigger {text!r}: a unix socket path has at most "
                f"{UNIX_PATH_MAX - 1} bytes"
            )
        return trigger
    raise SyslrnError(
        f"invalid trigger {text!r}: unknown family {family!r}; use tcp:PORT or unix:PATH"
    )


# /proc/net/unix flags bit of a listening socket (__SO_ACCEPTCON).
_SO_ACCEPTCON = 0x10000
_TCP_LISTEN = "0A"


def is_listening(trigger: Trigger) -> bool:
    """Return whether some socket of this network namespace listens on the
    trigger, as /proc/net shows it."""
    if trigger.kind == TRIGGER_TCP:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if port == trigger.port and fields[3] == _TCP_LISTEN:
                    return True
        return False
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        # The path is the last field and may contain spaces.
        fields = line.split(None, 7)
        if (
            len(fields) >= 8
            and fields[7] == trigger.path
            and int(fields[3], 16) & _SO_ACCEPTCON
        ):
            return True
    return False
