from __future__ import annotations

import os
import socket

import pytest

from syslrn.collect.trigger import (
    TRIGGER_TCP,
    TRIGGER_UNIX,
    is_listening,
    parse_trigger,
)
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


@pytest.mark.parametrize(
    "text", ["tcp:", "tcp:0", "tcp:-1", "tcp:\u0663", "unix:", "sctp:1", ""]
)
def test_invalid_triggers_rejected(text):
    with pytest.raises(SyslrnError, match="invalid trigger"):
        parse_trigger(text)


@pytest.mark.parametrize("name", ["plain.sock", "with space.sock", "two  spaces "])
def test_unix_listener_found_by_path(tmp_path, name):
    path = os.path.join(tmp_path, name)
    trigger = parse_trigger(f"unix:{path}")
    assert not is_listening(trigger)
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    try:
        assert is_listening(trigger)
    finally:
        server.close()


def test_abstract_listener_with_space_found():
    name = f"slt trigger {os.getpid()}"
    server = socket.socket(socket.AF_UNIX)
    server.bind("\0" + name)
    server.listen(1)
    try:
        assert is_listening(parse_trigger(f"unix:@{name}"))
    finally:
        server.close()
