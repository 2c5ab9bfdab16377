from __future__ import annotations

import pytest

from syslrn.collect.trigger import TRIGGER_TCP, TRIGGER_UNIX, parse_trigger
from syslrn.errors import SyslrnError


def test_tcp_trigger_parsed():
    trigger = parse_trigger("tcp:5432")
    assert trigger.kind == TRIGGER_TCP
    assert trigger.port == 5432
    assert str(trigger) == "tcp:5432"


def test_unix_path_trigger_carries_nul():
    trigger = parse_trigger("unix:/run/redis.sock")
    assert trigger.kind == TRIGGER_UNIX
    assert trigger.kernel_path() == b"/run/redis.sock\0"


def test_abstract_unix_trigger_starts_with_nul():
    assert parse_trigger("unix:@bus").kernel_path() == b"\0bus"


@pytest.mark.parametrize("text", ["tcp:", "tcp:0", "tcp:-1", "unix:", "sctp:1", ""])
def test_invalid_triggers_rejected(text):
    with pytest.raises(SyslrnError, match="invalid trigger"):
        parse_trigger(text)
