"""Log parsing into keys, session grouping and key-sequence files."""

from __future__ import annotations

import pytest

from syslrn.baselines.logparse import UNKNOWN_KEY, LogKeyParser, Mask, parse_masks
from syslrn.baselines.sessions import (
    ID_PLACEHOLDER,
    SessionGrouper,
    read_key_sequences,
    read_log_lines,
)
from syslrn.errors import LogError

POSTFIX_LOG = """\
May  1 10:00:01 mx postfix/smtpd[2101]: connect from localhost[127.0.0.1]
May  1 10:00:01 mx postfix/smtpd[2101]: 4F3A21B0C5: client=localhost[127.0.0.1]
May  1 10:00:01 mx postfix/cleanup[2102]: 4F3A21B0C5: message-id=<1@mx>
May  1 10:00:02 mx postfix/smtpd[2101]: 7D01E2A9B3: client=localhost[127.0.0.1]
May  1 10:00:02 mx postfix/qmgr[2000]: 4F3A21B0C5: from=<a@mx>, size=310, nrcpt=1
May  1 10:00:02 mx postfix/smtpd[2101]: disconnect from localhost[127.0.0.1]
May  1 10:00:03 mx postfix/local[2103]: 4F3A21B0C5: to=<b@mx>, status=sent
May  1 10:00:03 mx postfix/qmgr[2000]: 7D01E2A9B3: from=<c@mx>, size=1207, nrcpt=1
May  1 10:00:03 mx postfix/qmgr[2000]: 4F3A21B0C5: removed
"""

QUEUE_ID = r"\b([0-9A-F]{10}):"


def test_default_masks_cover_times_ids_addresses_numbers():
    parser = LogKeyParser()
    line = (
        "2024-05-01 10:00:00,123 worker[1234] instance "
        "5eda3874-867d-4c46-9c08-5576973d1fed from 10.0.0.7:5432 "
        "ptr 0x7f3a took 12.5 ms digest 9f86d081884c eth0 ok"
    )
    assert parser.mask(line) == (
        "<TIME> worker[<NUM>] instance <UUID> from <IP> "
        "ptr <HEX> took <NUM> ms digest <HEX> eth0 ok"
    )


def test_default_masks_keep_words_with_digits():
    parser = LogKeyParser()
    assert parser.mask("md5sum of sda1 via eth0") == "md5sum of sda1 via eth0"


def test_default_masks_ipv6():
    parser = LogKeyParser()
    assert parser.mask("listening on ::1 and fe80::1:2") == "listening on <IP> and <IP>"
    assert parser.mask("call std::string::size") == "call std::string::size"


def test_no_default_masks_leave_numbers():
    parser = LogKeyParser(default_masks=False)
    assert parser.mask("took 12 ms") == "took 12 ms"


def test_same_template_for_variable_parts():
    training = [
        "accepted connection from 127.0.0.1:40000 fd 7",
        "query took 12 ms rows 3",
        "accepted connection from 127.0.0.1:40002 fd 9",
        "query took 130 ms rows 0",
    ]
    parser = LogKeyParser().fit(training)
    keys = parser.transform(training)
    assert keys[0] == keys[2]
    assert keys[1] == keys[3]
    assert keys[0] != keys[1]
    assert len(parser.templates_) == 2
    assert parser.templates_[keys[0]] == "accepted connection from <IP> fd <NUM>"

    unseen_values = parser.transform(["query took 99999 ms rows 41"])
    assert unseen_values == [keys[1]]


def test_unseen_message_is_unknown_and_learns_nothing():
    parser = LogKeyParser().fit(["session opened for user root", "session closed"])
    before = dict(parser.templates_)
    keys = parser.transform(
        ["kernel: Out of memory: killed process 4242", "session closed"]
    )
    assert keys[0] == UNKNOWN_KEY
    assert keys[1] != UNKNOWN_KEY
    # Matching the unseen message a second time must not find a template
    # that the first transform created.
    assert parser.transform(["kernel: Out of memory: killed process 4242"]) == [
        UNKNOWN_KEY
    ]
    assert parser.templates_ == before


def test_component_mask_merges_names():
    training = ["user alice logged in", "user alice logged in"]
    plain = LogKeyParser().fit(training)
    assert plain.transform(["user bob logged in"]) == [UNKNOWN_KEY]

    masked = LogKeyParser([Mask(r"(?<=user )\w+", "USER")]).fit(training)
    assert masked.transform(["user bob logged in"]) == masked.transform(training[:1])
    assert masked.transform(["user bob logged in"]) != [UNKNOWN_KEY]


def test_fit_on_masked_messages():
    parser = LogKeyParser()
    masked = [parser.mask("took 5 ms"), parser.mask("took 7 ms")]
    parser.fit(masked, masked=True)
    assert parser.transform(["took 9 ms"]) == parser.transform(masked, masked=True)[:1]


def test_transform_before_fit_raises():
    with pytest.raises(RuntimeError):
        LogKeyParser().transform(["x"])


def test_parse_masks_forms():
    masks = parse_masks(
        [r"\bq\d+\b", {"regex_pattern": r"user=\w+", "mask_with": "USER"}]
    )
    assert masks == [Mask(r"\bq\d+\b", "*"), Mask(r"user=\w+", "USER")]


def test_parse_masks_rejects_other_types():
    with pytest.raises(ValueError, match="invalid mask"):
        parse_masks([42])


def test_grouping_postfix_queue_ids():
    grouper = SessionGrouper("postfix", QUEUE_ID)
    sessions = grouper.group(POSTFIX_LOG.splitlines())

    assert list(sessions) == ["4F3A21B0C5", "7D01E2A9B3"]
    assert len(sessions["4F3A21B0C5"]) == 5
    assert len(sessions["7D01E2A9B3"]) == 2
    assert sessions["4F3A21B0C5"][-1].endswith(f"{ID_PLACEHOLDER}: removed")
    assert all("4F3A21B0C5" not in message for message in sessions["4F3A21B0C5"])
    assert grouper.lines_seen_ == 9
    assert grouper.lines_matched_ == 7


def test_grouped_sessions_parse_to_keys():
    grouper = SessionGrouper("postfix", QUEUE_ID)
    sessions = grouper.group(POSTFIX_LOG.splitlines())
    parser = LogKeyParser().fit(m for messages in sessions.values() for m in messages)
    first = parser.transform(sessions["4F3A21B0C5"])
    second = parser.transform(sessions["7D01E2A9B3"])
    # Both queue entries start with the same two steps: client, then from=.
    # The first has cleanup in between.
    assert first[0] == second[0]
    assert first[2] == second[1]
    assert UNKNOWN_KEY not in first + second


def test_empty_identifier_group_is_dropped():
    grouper = SessionGrouper("app", r"req=(\d*) ")
    sessions = grouper.group(["req= start", "req=7 start"])
    assert list(sessions) == ["7"]


def test_no_matching_line_names_component_and_regex():
    grouper = SessionGrouper("postfix", r"\bqueue=(\w+)")
    grouper.group(POSTFIX_LOG.splitlines())
    with pytest.raises(LogError) as caught:
        grouper.check_matched("mail.log")
    message = str(caught.value)
    assert "'postfix'" in message
    assert r"\bqueue=(\w+)" in message
    assert "mail.log" in message


def test_regex_without_group_rejected():
    with pytest.raises(LogError, match="no group"):
        SessionGrouper("app", r"req=\d+")


def test_invalid_regex_rejected():
    with pytest.raises(LogError, match="invalid"):
        SessionGrouper("app", r"req=(\d+")


def test_read_log_lines_cleans_input(tmp_path):
    # Blank lines are skipped and invalid UTF-8 bytes replaced.
    path = tmp_path / "app.log"
    path.write_bytes(b"first\n\n  \nsecond \xff line\n")
    lines = read_log_lines(path)
    assert lines == ["first", "second \ufffd line"]


def test_read_key_sequences(tmp_path):
    path = tmp_path / "train"
    path.write_text("a1,59 3 22\n\nb2,59 7\n")
    assert read_key_sequences(path) == [("a1", ["59", "3", "22"]), ("b2", ["59", "7"])]


def test_read_key_sequences_missing_comma(tmp_path):
    path = tmp_path / "train"
    path.write_text("a1,59 3\nb2 59 7\n")
    with pytest.raises(LogError, match=r"train:2: missing the comma"):
        read_key_sequences(path)


def test_read_key_sequences_empty_session(tmp_path):
    path = tmp_path / "train"
    path.write_text("a1,\n")
    with pytest.raises(LogError, match="has no keys"):
        read_key_sequences(path)


def test_read_key_sequences_missing_file(tmp_path):
    with pytest.raises(LogError, match="not found"):
        read_key_sequences(tmp_path / "absent")
