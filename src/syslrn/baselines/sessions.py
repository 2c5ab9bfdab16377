"""Session grouping of log lines, and files of pre-parsed key sequences.

A session is the ordered list of a component's log lines that carry the same
identifier, such as a mail queue id, a database backend pid or a cloud
instance id. A log-based detector judges each session on its own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

from syslrn.errors import LogError
from syslrn.text import format_count

log = logging.getLogger(__name__)

#: Placeholder for the session identifier inside a message, so that the
#: identifier does not make every session's messages look different.
ID_PLACEHOLDER = "<ID>"


class SessionGrouper:
    """Group one component's log lines into sessions by an identifier regex.

    Parameters
    ----------
    component : str
        Name of the component, used in error messages.
    session_regex : str
        Regular expression searched in each line. Its first group is the
        session identifier. Lines where it does not match, or where the group
        matches nothing, belong to no session and are dropped.

    Attributes
    ----------
    lines_seen_ : int
        Lines given to :meth:`group` so far.
    lines_matched_ : int
        Lines among them that carried a session identifier.
    """

    def __init__(self, component: str, session_regex: str):
        self.component = component
        self.session_regex = session_regex
        try:
            self._regex = re.compile(session_regex)
        except re.error as exc:
            raise LogError(
                f"component {component!r}: session regex '{session_regex}' is "
                f"invalid ({exc}); fix the regular expression"
            ) from None
        if self._regex.groups < 1:
            raise LogError(
                f"component {component!r}: session regex '{session_regex}' has no "
                "group; put the session identifier in parentheses"
            )
        self.lines_seen_ = 0
        self.lines_matched_ = 0

    def group(self, lines: Iterable[str]) -> dict[str, list[str]]:
        """Group lines into sessions, keeping the order of the lines.

        Parameters
        ----------
        lines : iterable of str
            One component's log lines, oldest first.

        Returns
        -------
        dict of str to list of str
            Messages of each session, keyed by identifier, in order of each
            session's first line. In each message the identifier is replaced
            by :data:`ID_PLACEHOLDER`.
        """
        sessions: dict[str, list[str]] = {}
        for line in lines:
            self.lines_seen_ += 1
            match = self._regex.search(line)
            if match is None or not match.group(1):
                continue
            self.lines_matched_ += 1
            start, end = match.span(1)
            message = line[:start] + ID_PLACEHOLDER + line[end:]
            sessions.setdefault(match.group(1), []).append(message)
        return sessions

    def check_matched(self, where: str) -> None:
        """Raise LogError when no line seen so far carried an identifier.

        Parameters
        ----------
        where : str
            What the lines came from, for the message (a file or a campaign).
        """
        if self.lines_matched_ == 0:
            raise LogError(
                f"component {self.component!r}: no line of {self.lines_seen_} in "
                f"{where} matches the session regex '{self.session_regex}'; "
                "fix the regex or check that the log has the expected format"
            )


def read_log_lines(path: str | Path) -> list[str]:
    """Read a log file into lines without line ends, skipping blank lines.

    Bytes that are not valid UTF-8 are replaced, because logs quote
    client input verbatim and one bad byte must not stop the evaluation.
    """
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if line.strip()]


def read_key_sequences(path: str | Path) -> list[tuple[str, list[str]]]:
    """Read a file of pre-parsed log-key sequences.

    Each non-blank line is ``session-id,key key key ...``: the session id, a
    comma, then the session's keys separated by spaces.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    list of (str, list of str)
        The session id and keys of each line, in file order.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LogError(f"{path}: key-sequence file not found") from None
    except UnicodeDecodeError as exc:
        raise LogError(
            f"{path}: not UTF-8 text ({exc.reason}); expected lines of 'id,key key ...'"
        ) from None

    sequences = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        session, comma, keys = line.partition(",")
        if not comma:
            raise LogError(
                f"{path}:{number}: missing the comma after the session id; "
                "expected 'id,key key ...'"
            )
        tokens = keys.split()
        if not tokens:
            raise LogError(f"{path}:{number}: session {session!r} has no keys")
        sequences.append((session.strip(), tokens))
    log.debug("%s: %s", path, format_count(len(sequences), "key sequence"))
    return sequences
