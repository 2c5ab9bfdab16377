"""On-disk layout of a campaign: its description, index table and experiments.

A campaign directory contains::

    campaign.json        scenario, creation time, parameters, the plan of
                         experiments, the fault catalogue and the log sources
    index.csv            one row per finished experiment
    e0001/trace.parquet  the experiment's trace
    e0001/labels.json    its labels and timings
    e0001/logs/<component>.log   the slice of each log written during it

Directories are created with mode 0700 and files with 0600, because traces
and logs reveal what a host runs. docs/campaigns.md describes every field.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

from syslrn.errors import CampaignError

log = logging.getLogger(__name__)

CAMPAIGN_FILE = "campaign.json"
INDEX_FILE = "index.csv"
TRACE_FILE = "trace.parquet"
LABELS_FILE = "labels.json"
LOGS_DIR = "logs"

DIR_MODE = 0o700
FILE_MODE = 0o600

PHASES = ("startup", "idle", "workload")
NO_FAULT = "none"

#: Columns of index.csv, in order.
INDEX_COLUMNS = (
    "id",
    "phase",
    "requested",
    "requests",
    "fault",
    "failure",
    "effective",
    "workload_errors",
    "lost",
    "started",
    "duration_s",
    "trace",
    "status",
)

#: Status of an experiment that ran to its end; other statuses are redone
#: when the campaign is run again.
STATUS_OK = "ok"
STATUS_ERROR = "error"


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) readable by its owner only."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    path.chmod(DIR_MODE)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, with mode 0600."""
    staged = path.with_name(path.name + ".tmp")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staged, path)


def write_json(path: Path, document: dict[str, Any]) -> None:
    write_private(path, (json.dumps(document, indent=2) + "\n").encode())


def read_campaign(directory: str | os.PathLike) -> dict[str, Any]:
    """Read the campaign.json of ``directory``.

    Raises
    ------
    CampaignError
        The file is missing or is not valid JSON.
    """
    path = Path(directory) / CAMPAIGN_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CampaignError(
            f"{directory}: no {CAMPAIGN_FILE}; not a campaign directory"
        ) from None
    except json.JSONDecodeError as exc:
        raise CampaignError(f"{path}: invalid JSON ({exc})") from None


def read_index(directory: str | os.PathLike) -> list[dict[str, str]]:
    """Read the rows of a campaign's index.csv, dropping a torn last line.

    An interrupted write can leave a last line with fewer fields; that row
    is dropped with a warning, and its experiment counts as not finished.
    """
    path = Path(directory) / INDEX_FILE
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(INDEX_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise CampaignError(
                f"{path}: index lacks columns {sorted(missing)}; it was not "
                "written by this syslrn"
            )
        rows = []
        for row in reader:
            if any(row.get(column) is None for column in INDEX_COLUMNS):
                log.warning("%s: dropped an incomplete row %r", path, row)
                continue
            rows.append({column: row[column] for column in INDEX_COLUMNS})
    return rows


def write_index(directory: Path, rows: list[dict[str, str]]) -> None:
    """Replace index.csv with ``rows``."""
    text = _rows_to_csv(rows, header=True)
    write_private(directory / INDEX_FILE, text.encode())


def append_index(directory: Path, row: dict[str, str]) -> None:
    """Append one row to index.csv and flush it to disk."""
    path = directory / INDEX_FILE
    text = _rows_to_csv([row], header=not path.exists())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    with os.fdopen(fd, "w", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _rows_to_csv(rows: list[dict[str, str]], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=INDEX_COLUMNS, lineterminator="\n", extrasaction="ignore"
    )
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def index_row(labels: dict[str, Any]) -> dict[str, str]:
    """Return the index.csv row of an experiment from its labels.json document.

    Booleans become ``true`` or ``false``; absent or None values, such as
    ``effective`` of a run without a fault, become empty cells.
    """
    row = {}
    for column in INDEX_COLUMNS:
        value = labels.get(column)
        if column == "duration_s" and value is not None:
            value = f"{value:.3f}"
        row[column] = format_value(value)
    return row


def format_value(value: Any) -> str:
    """Return a label value as index.csv stores it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
