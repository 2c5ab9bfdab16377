"""The monitor's --metrics address."""

from __future__ import annotations

import pytest

from syslrn.errors import SyslrnError
from syslrn.monitor.metrics import parse_address


@pytest.mark.parametrize(
    "text, address",
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("9464", ("127.0.0.1", 9464)),
        ("[::1]:1", ("::1", 1)),
        (":65535", ("127.0.0.1", 65535)),
    ],
)
def test_parse_address_valid(text, address):
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["127.0.0.1:99999", "127.0.0.1:0", "65536"])
def test_parse_address_port_out_of_range(text):
    with pytest.raises(SyslrnError) as error:
        parse_address(text)
    assert f"invalid --metrics {text!r}" in str(error.value)
    assert "is out of range 1..65535" in str(error.value)


@pytest.mark.parametrize(
    "text", ["127.0.0.1:http", "127.0.0.1:", "host:-1", "h:\u00b2"]
)
def test_parse_address_port_not_number(text):
    with pytest.raises(SyslrnError) as error:
        parse_address(text)
    assert f"invalid --metrics {text!r}: expected HOST:PORT" in str(error.value)
