"""Campaign directories, as log-based detectors read them.

A campaign directory contains:

- ``campaign.json``: ``{"scenario": NAME, "log_sources": [SOURCE, ...]}``,
  where each source is ``{"component": ..., "file": "logs/<component>.log",
  "session_regex": ..., "masks": [...]}``. ``file`` is relative to an
  experiment's directory, ``session_regex`` has one group (the session
  identifier) and ``masks`` (optional) lists masking regexes for the log
  parser, as accepted by :func:`syslrn.baselines.logparse.parse_masks`.
- ``index.csv``: one row per experiment with at least the columns ``id``,
  ``phase``, ``requests``, ``fault``, ``failure`` (true or false) and
  ``trace``. Rows whose optional ``status`` column is not ``ok`` are
  skipped.
- ``<id>/``: one directory per experiment, holding its logs and
  ``labels.json``.

Only experiments of phase ``workload`` are judged by detectors.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from syslrn.baselines.logparse import Mask, parse_masks
from syslrn.errors import CampaignError

log = logging.getLogger(__name__)

CAMPAIGN_FILE = "campaign.json"
INDEX_FILE = "index.csv"
INDEX_COLUMNS = ("id", "phase", "requests", "fault", "failure", "trace")

#: Phase of the experiments that detectors are trained and judged on.
WORKLOAD_PHASE = "workload"

#: Values of the ``fault`` column that mean no fault was injected.
NO_FAULT = ("", "none", "-")

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


@dataclass(frozen=True)
class ComponentLog:
    """One component's log in every experiment, and how to group it."""

    component: str
    #: Path of the log file relative to an experiment's directory.
    file: str
    session_regex: str
    masks: tuple[Mask, ...] = ()


@dataclass(frozen=True)
class Experiment:
    """One row of the campaign index."""

    id: str
    phase: str
    #: Name of the injected fault, or "none".
    fault: str
    failure: bool
    directory: Path

    def log_path(self, source: ComponentLog) -> Path:
        """Return the path of ``source``'s log file in this experiment."""
        return self.directory / source.file


@dataclass
class Campaign:
    """A campaign directory's index and log sources."""

    directory: Path
    scenario: str
    log_sources: list[ComponentLog]
    experiments: list[Experiment]

    def workload_experiments(self) -> list[Experiment]:
        """Return the experiments of phase ``workload``, sorted by id.

        This order is the one given to
        :func:`syslrn.evaluate.folds.make_folds`, so that every detector
        gets the same folds. Ids sort as strings.
        """
        return sorted(
            (e for e in self.experiments if e.phase == WORKLOAD_PHASE),
            key=lambda e: e.id,
        )

    def source(self, component: str) -> ComponentLog:
        """Return the log source of ``component``."""
        for source in self.log_sources:
            if source.component == component:
                return source
        known = ", ".join(s.component for s in self.log_sources)
        raise CampaignError(
            f"{self.directory}: no log source for component {component!r}; "
            f"the campaign has: {known}"
        )


def load_campaign(directory: str | Path) -> Campaign:
    """Read a campaign directory's ``campaign.json`` and ``index.csv``.

    Parameters
    ----------
    directory : str or Path

    Returns
    -------
    Campaign
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CampaignError(f"{directory}: campaign directory not found")
    scenario, sources = _read_campaign_file(directory / CAMPAIGN_FILE)
    experiments = _read_index(directory / INDEX_FILE)
    return Campaign(
        directory=directory,
        scenario=scenario,
        log_sources=sources,
        experiments=experiments,
    )


def _read_campaign_file(path: Path) -> tuple[str, list[ComponentLog]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CampaignError(
            f"{path}: not found; a campaign directory needs {CAMPAIGN_FILE} "
            "with its log sources"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CampaignError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise CampaignError(f"{path}: expected a JSON object")

    entries = document.get("log_sources")
    if not isinstance(entries, list) or not entries:
        raise CampaignError(
            f"{path}: 'log_sources' is missing or empty; log-based detectors "
            "need at least one component log"
        )

    sources = []
    for number, entry in enumerate(entries):
        missing = [
            k
            for k in ("component", "file", "session_regex")
            if not isinstance(entry, dict) or not entry.get(k)
        ]
        if missing:
            raise CampaignError(
                f"{path}: log_sources[{number}] is missing {', '.join(missing)}"
            )
        try:
            masks = parse_masks(entry.get("masks") or [])
        except ValueError as exc:
            raise CampaignError(
                f"{path}: log_sources[{number}] ({entry['component']}): {exc}"
            ) from None
        sources.append(
            ComponentLog(
                component=str(entry["component"]),
                file=str(entry["file"]),
                session_regex=str(entry["session_regex"]),
                masks=tuple(masks),
            )
        )

    names = [s.component for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CampaignError(
            f"{path}: component(s) listed twice: {', '.join(duplicates)}"
        )
    return str(document.get("scenario", "")), sources


def _read_index(path: Path) -> list[Experiment]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            rows = list(reader)
    except FileNotFoundError:
        raise CampaignError(
            f"{path}: not found; a campaign directory needs {INDEX_FILE}"
        ) from None

    missing = [c for c in INDEX_COLUMNS if c not in columns]
    if missing:
        raise CampaignError(f"{path}: missing column(s) {', '.join(missing)}")

    experiments = []
    seen = set()
    for line, row in enumerate(rows, start=2):
        experiment_id = (row["id"] or "").strip()
        if not experiment_id:
            raise CampaignError(f"{path}:{line}: empty experiment id")
        # An experiment that ended with an error has no results to judge,
        # and the campaign runner redoes it when the campaign is run again.
        status = (row.get("status") or "ok").strip()
        if status != "ok":
            log.info("%s:%d: skipped %s, status %s", path, line, experiment_id, status)
            continue
        if experiment_id in seen:
            raise CampaignError(
                f"{path}:{line}: experiment id {experiment_id!r} listed twice"
            )
        seen.add(experiment_id)
        experiments.append(
            Experiment(
                id=experiment_id,
                phase=(row["phase"] or "").strip(),
                fault=_fault_name(row["fault"]),
                failure=_parse_failure(row["failure"], path, line),
                directory=path.parent / experiment_id,
            )
        )
    return experiments


def _fault_name(value: str | None) -> str:
    name = (value or "").strip()
    return "none" if name.lower() in NO_FAULT else name


def _parse_failure(value: str | None, path: Path, line: int) -> bool:
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise CampaignError(
        f"{path}:{line}: failure={value!r} is invalid; expected true or false"
    )
