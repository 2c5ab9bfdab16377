"""Wording helpers for output, logs and error messages."""

from __future__ import annotations


def format_count(count: int, noun: str, plural: str | None = None) -> str:
    """Return ``count`` followed by ``noun`` in the singular or plural.

    The plural is ``noun`` plus "s" unless ``plural`` gives it, as for
    "process" and "processes". Only a count of exactly 1 takes the
    singular, so "0 requests" and "1 request".
    """
    word = noun if count == 1 else (plural or noun + "s")
    return f"{count} {word}"
