"""The request trigger: the listening socket whose accepted connections are
counted as requests, given as ``tcp:PORT`` or ``unix:PATH``."""

from __future__ import annotations

from dataclasses import dataclass

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


def parse_trigger(text: str) -> Trigger:
    """Parse ``tcp:PORT`` or ``unix:PATH``; raise SyslrnError naming the value."""
    family, sep, rest = text.partition(":")
    if not sep or not rest:
        raise SyslrnError(f"invalid trigger {text!r}: expected tcp:PORT or unix:PATH")
    if family == "tcp":
        if not rest.isdigit() or not 0 < int(rest) < 65536:
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
