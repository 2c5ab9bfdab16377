"""Labelled experiment campaigns: a scenario driven while the recorder runs.

A campaign is a fixed plan of experiments, drawn once from a seed and
stored in campaign.json. Each experiment has a phase:

- ``startup``: the recording spans the scenario's set-up, servers starting;
- ``idle``: the servers run and nothing sends them requests;
- ``workload``: the workload driver issues ``requested`` requests, with no
  fault or with one fault of the scenario's catalogue applied.

Before each experiment the runner verifies the scenario with
:meth:`~syslrn.scenarios.base.Scenario.check` (setting it up again if the
check fails), and after it resets the scenario's state, so that experiments
do not depend on each other. The index records each finished experiment;
running the same campaign again skips those and redoes the rest, including
one that an interruption left half-written. See docs/campaigns.md for the
layout of the directory.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from syslrn import __version__
from syslrn.errors import CampaignError, SyslrnError
from syslrn.evaluate.dataset import (
    CAMPAIGN_FILE,
    FILE_MODE,
    LABELS_FILE,
    LOGS_DIR,
    NO_FAULT,
    STATUS_ERROR,
    STATUS_OK,
    TRACE_FILE,
    append_index,
    format_value,
    index_row,
    make_private_dir,
    read_campaign,
    read_index,
    write_index,
    write_json,
    write_private,
)
from syslrn.evaluate.plan import CampaignParams, Experiment, plan_campaign
from syslrn.scenarios import scenario_class
from syslrn.scenarios.base import Scenario, WorkloadResult
from syslrn.text import format_count

log = logging.getLogger(__name__)

#: The campaign stops after this many experiments in a row raised an error:
#: the scenario or the recorder is broken, and more attempts would fail too.
MAX_CONSECUTIVE_ERRORS = 3


class Recording(Protocol):
    """The part of :class:`syslrn.collect.recorder.Recorder` that the runner calls."""

    def start(self) -> None: ...

    def stop(self) -> dict[str, Any]: ...


#: Builds a recording as ``factory(trace_path, trigger=..., labels=...)``.
RecorderFactory = Callable[..., Recording]


class ProgressReporter(Protocol):
    def start(self, step: str) -> None: ...

    def finish(self, *, failure: bool = False, error: bool = False) -> None: ...

    def close(self) -> None: ...


def load_recorder() -> RecorderFactory:
    """Return the recorder class, or raise when this build lacks it."""
    try:
        from syslrn.collect.recorder import Recorder
    except ImportError as exc:
        raise CampaignError(
            f"the recorder is not available ({exc}); install syslrn with its "
            "collect package and build the BPF objects (scripts/setup)"
        ) from None
    return Recorder


@dataclass
class CampaignSummary:
    """Counts of one call of :meth:`CampaignRunner.run`."""

    total: int
    skipped: int = 0
    finished: int = 0
    failures: int = 0
    errors: int = 0
    experiment_ids: list[str] = field(default_factory=list)


class CampaignRunner:
    """Run, or resume, a campaign of a scenario into a directory.

    Parameters
    ----------
    scenario : str
        Name of a scenario in :data:`syslrn.scenarios.SCENARIOS`.
    directory : path
        The campaign directory. A new one is created, and one that contains
        a campaign.json is resumed.
    params : CampaignParams or None
        Required for a new campaign. For an existing one, None resumes it
        with its stored parameters; other parameters than the stored ones
        raise :class:`CampaignError`.
    recorder_factory : callable, optional
        Builds the recording of each experiment; the default is
        :class:`syslrn.collect.recorder.Recorder`.
    progress_factory : callable, optional
        ``progress_factory(total, done)`` returns the progress reporter.
    workdir_root : path, optional
        Where the scenario's temporary work directory goes; the system
        temporary directory by default.
    """

    def __init__(
        self,
        scenario: str,
        directory: str | Path,
        params: CampaignParams | None = None,
        *,
        recorder_factory: RecorderFactory | None = None,
        progress_factory: Callable[[int, int], ProgressReporter] | None = None,
        workdir_root: str | Path | None = None,
    ):
        self.scenario_name = scenario
        self.directory = Path(directory)
        self.params = params
        self.recorder_factory = recorder_factory
        self.progress_factory = progress_factory
        self.workdir_root = workdir_root
        self._scenario: Scenario | None = None
        self._set_up = False

    def run(self) -> CampaignSummary:
        """Run every experiment of the plan that has not finished yet."""
        recorder_factory = self.recorder_factory or load_recorder()
        scenario_type = scenario_class(self.scenario_name)
        workdir = Path(
            tempfile.mkdtemp(
                prefix=f"syslrn-{self.scenario_name}-", dir=self.workdir_root
            )
        )
        self._scenario = scenario_type(workdir)
        progress = None
        try:
            document = self._open_campaign()
            plan = _read_plan(document, self.directory)
            finished = self._finished_rows(plan)
            todo = [experiment for experiment in plan if experiment.id not in finished]
            for experiment in todo:
                # Left by an interrupted or failed attempt: start it afresh.
                shutil.rmtree(self.directory / experiment.id, ignore_errors=True)
            write_index(
                self.directory, [finished[e.id] for e in plan if e.id in finished]
            )

            summary = CampaignSummary(total=len(plan), skipped=len(finished))
            if self.progress_factory is not None:
                progress = self.progress_factory(len(plan), len(finished))
            self._run_experiments(todo, recorder_factory, summary, progress)
            return summary
        finally:
            if progress is not None:
                progress.close()
            self._teardown()
            shutil.rmtree(workdir, ignore_errors=True)
            self._sort_index()

    # -- campaign directory --------------------------------------------------

    def _open_campaign(self) -> dict[str, Any]:
        path = self.directory / CAMPAIGN_FILE
        if path.exists():
            return self._resume_campaign()
        if self.directory.exists() and any(self.directory.iterdir()):
            raise CampaignError(
                f"{self.directory}: directory is not empty and has no "
                f"{CAMPAIGN_FILE}; choose a new or empty output directory"
            )
        if self.params is None:
            raise CampaignError(
                f"{self.directory}: no campaign to resume; give the number of runs "
                "to start a new one"
            )

        scenario = self._require_scenario()
        faults = scenario.faults()
        plan = plan_campaign(self.params, list(faults))
        document = {
            "scenario": self.scenario_name,
            "created": _now(),
            "syslrn_version": __version__,
            "params": self.params.to_json(),
            "faults": {
                name: fault.description for name, fault in sorted(faults.items())
            },
            "log_sources": [
                {
                    "component": source.component,
                    "file": f"{LOGS_DIR}/{source.component}.log",
                    "session_regex": source.session_regex,
                    # drain3's form of a masking instruction.
                    "masks": [
                        {"regex_pattern": pattern, "mask_with": name}
                        for pattern, name in source.masks
                    ],
                }
                for source in scenario.logs()
            ],
            "experiments": [asdict(experiment) for experiment in plan],
        }
        make_private_dir(self.directory)
        write_json(path, document)
        log.info(
            "new campaign of %s in %s",
            format_count(len(plan), "experiment"),
            self.directory,
        )
        return document

    def _resume_campaign(self) -> dict[str, Any]:
        document = read_campaign(self.directory)
        if document.get("scenario") != self.scenario_name:
            raise CampaignError(
                f"{self.directory}: contains a campaign of scenario "
                f"{document.get('scenario')!r}, not {self.scenario_name!r}; "
                "choose another output directory"
            )
        stored = CampaignParams.from_json(document.get("params", {}))
        if self.params is not None and self.params != stored:
            raise CampaignError(
                f"{self.directory}: contains a campaign with parameters "
                f"{json.dumps(stored.to_json())}; give the same ones (or none) to "
                "resume it, or choose another output directory"
            )
        self.params = stored
        log.info("resuming the campaign in %s", self.directory)
        return document

    def _finished_rows(self, plan: list[Experiment]) -> dict[str, dict[str, str]]:
        planned = {experiment.id for experiment in plan}
        finished = {}
        for row in read_index(self.directory):
            complete = (self.directory / row["id"] / LABELS_FILE).exists()
            if row["id"] in planned and row["status"] == STATUS_OK and complete:
                finished[row["id"]] = row
        return finished

    def _sort_index(self) -> None:
        # Retried experiments were appended after later ones: restore the
        # plan's order.
        if not (self.directory / CAMPAIGN_FILE).exists():
            return
        rows = sorted(read_index(self.directory), key=lambda row: row["id"])
        write_index(self.directory, rows)

    # -- experiments -----------------------------------------------------------

    def _run_experiments(
        self,
        todo: list[Experiment],
        recorder_factory: RecorderFactory,
        summary: CampaignSummary,
        progress: ProgressReporter | None,
    ) -> None:
        consecutive_errors = 0
        last_error = ""
        for experiment in todo:
            if progress is not None:
                progress.start(experiment.describe())
            try:
                row = self._run_experiment(experiment, recorder_factory)
                consecutive_errors = 0
            except (SyslrnError, OSError) as exc:
                log.error("experiment %s failed: %s", experiment.id, exc)
                row = self._record_error(experiment, exc)
                last_error = str(exc)
                # The next experiment sets the scenario up from scratch.
                self._teardown()
                consecutive_errors += 1
            append_index(self.directory, row)

            summary.finished += 1
            summary.experiment_ids.append(experiment.id)
            failure = row["failure"] == "true"
            error = row["status"] != STATUS_OK
            summary.failures += int(failure)
            summary.errors += int(error)
            if progress is not None:
                progress.finish(failure=failure, error=error)
            if consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                raise CampaignError(
                    f"{consecutive_errors} experiments in a row failed, the last "
                    f"({experiment.id}) with: {last_error}; fix the cause and run the "
                    "campaign again to resume it"
                )

    def _run_experiment(
        self, experiment: Experiment, recorder_factory: RecorderFactory
    ) -> dict[str, str]:
        scenario = self._require_scenario()
        experiment_dir = make_private_dir(self.directory / experiment.id)
        make_private_dir(experiment_dir / LOGS_DIR)
        if experiment.phase == "startup":
            self._teardown()
        else:
            self._verify()

        fault = None
        if experiment.fault != NO_FAULT:
            fault = scenario.faults().get(experiment.fault)
            if fault is None:
                raise CampaignError(
                    f"{experiment.id}: fault {experiment.fault!r} of the plan is not "
                    f"in the catalogue of scenario {self.scenario_name}"
                )
        trace_path = experiment_dir / TRACE_FILE
        trace_labels = self._trace_labels(experiment)
        recording = recorder_factory(
            trace_path, trigger=scenario.trigger, labels=trace_labels
        )

        # The fault is applied before the recording starts and reverted
        # after it stops: what applying it costs (a reload, an admin
        # session) is not part of the experiment.
        if fault is not None:
            fault.apply()
        try:
            log_start = self._log_offsets()
            started_at = _now()
            started = time.monotonic()
            recording.start()
            try:
                result = self._drive(experiment)
            finally:
                meta = recording.stop() or {}
            duration = time.monotonic() - started
            log_end = self._log_offsets()
        finally:
            if fault is not None:
                fault.revert()

        self._copy_logs(experiment_dir, log_start, log_end)
        if trace_path.exists():
            trace_path.chmod(FILE_MODE)
        if experiment.phase != "startup":
            scenario.reset()

        return self._write_labels(
            experiment,
            experiment_dir,
            result,
            meta,
            trace_labels,
            started_at=started_at,
            duration=duration,
        )

    def _drive(self, experiment: Experiment) -> WorkloadResult:
        scenario = self._require_scenario()
        if experiment.phase == "startup":
            started = time.monotonic()
            self._set_up_scenario()
            return WorkloadResult(requests=0, duration_s=time.monotonic() - started)
        if experiment.phase == "idle":
            time.sleep(self.params.idle_seconds)
            return WorkloadResult(requests=0, duration_s=self.params.idle_seconds)
        return scenario.run_workload(experiment.requested)

    def _verify(self) -> None:
        """Set the scenario up if needed and check it, setting it up again once."""
        scenario = self._require_scenario()
        if not self._set_up:
            self._set_up_scenario()
        try:
            scenario.check()
        except SyslrnError as exc:
            log.warning("scenario check failed (%s); setting it up again", exc)
            self._teardown()
            self._set_up_scenario()
            scenario.check()

    def _set_up_scenario(self) -> None:
        # Marked before the call, so that a set-up that fails half-way is
        # still torn down.
        self._set_up = True
        self._require_scenario().setup()

    def _teardown(self) -> None:
        """Tear the scenario down if it is set up; log, not raise, a failure."""
        if not self._set_up or self._scenario is None:
            return
        self._set_up = False
        try:
            self._scenario.teardown()
        except (SyslrnError, OSError) as exc:
            log.error("tearing down scenario %s failed: %s", self.scenario_name, exc)

    def _require_scenario(self) -> Scenario:
        if self._scenario is None:
            raise CampaignError("the campaign's scenario is not created; call run()")
        return self._scenario

    def _trace_labels(self, experiment: Experiment) -> dict[str, str]:
        # During startup the servers start as children of this process, so
        # the recorder tags them as the driver. They are the system under
        # test there, so the run is not labelled driven and they are kept.
        driven = experiment.phase != "startup"
        return {
            "scenario": self.scenario_name,
            "experiment": experiment.id,
            "phase": experiment.phase,
            "requests": str(experiment.requested),
            "fault": experiment.fault,
            "driven": format_value(driven),
        }

    # -- logs, labels, index rows ------------------------------------------------

    def _log_offsets(self) -> dict[str, int]:
        offsets = {}
        for source in self._require_scenario().logs():
            try:
                offsets[source.component] = Path(source.path).stat().st_size
            except FileNotFoundError:
                offsets[source.component] = 0
        return offsets

    def _copy_logs(
        self, experiment_dir: Path, start: dict[str, int], end: dict[str, int]
    ) -> None:
        """Copy the part of each log written during the recording."""
        for source in self._require_scenario().logs():
            begin = start.get(source.component, 0)
            stop = end.get(source.component, 0)
            if stop < begin:
                # The file was recreated during the recording (a new set-up).
                begin = 0
            data = b""
            try:
                with open(source.path, "rb") as handle:
                    handle.seek(begin)
                    data = handle.read(stop - begin)
            except FileNotFoundError:
                log.warning("log %s of %s not found", source.path, source.component)
            target = experiment_dir / LOGS_DIR / f"{source.component}.log"
            write_private(target, data)

    def _write_labels(
        self,
        experiment: Experiment,
        experiment_dir: Path,
        result: WorkloadResult,
        meta: dict[str, Any],
        trace_labels: dict[str, str],
        *,
        started_at: str,
        duration: float,
    ) -> dict[str, str]:
        faulty = experiment.fault != NO_FAULT
        if not faulty and result.errors:
            log.warning(
                "experiment %s saw %s without a fault: %s",
                experiment.id,
                format_count(result.errors, "workload error"),
                result.messages[:1],
            )
        counted = meta.get("requests")
        labels = {
            "id": experiment.id,
            "scenario": self.scenario_name,
            "phase": experiment.phase,
            "requested": experiment.requested,
            "requests": None if counted is None else int(counted),
            "fault": experiment.fault,
            "fault_description": self._fault_description(experiment.fault),
            "failure": faulty and result.errors > 0,
            "effective": result.errors > 0 if faulty else None,
            "workload_errors": result.errors,
            "error_messages": list(result.messages),
            "workload_duration_s": round(result.duration_s, 6),
            "started": started_at,
            "duration_s": round(duration, 6),
            "lost": _lost_events(meta),
            "lost_counters": meta.get("lost"),
            "trace": f"{experiment.id}/{TRACE_FILE}",
            "trace_labels": trace_labels,
            "status": STATUS_OK,
        }
        write_json(experiment_dir / LABELS_FILE, labels)
        return index_row(labels)

    def _record_error(self, experiment: Experiment, exc: Exception) -> dict[str, str]:
        experiment_dir = make_private_dir(self.directory / experiment.id)
        labels = {
            "id": experiment.id,
            "scenario": self.scenario_name,
            "phase": experiment.phase,
            "requested": experiment.requested,
            "fault": experiment.fault,
            "started": _now(),
            "status": STATUS_ERROR,
            "error": str(exc),
        }
        write_json(experiment_dir / LABELS_FILE, labels)
        return index_row(labels)

    def _fault_description(self, name: str) -> str:
        fault = self._require_scenario().faults().get(name)
        return "" if fault is None else fault.description


def _read_plan(document: dict[str, Any], directory: Path) -> list[Experiment]:
    try:
        return [Experiment(**entry) for entry in document["experiments"]]
    except (KeyError, TypeError) as exc:
        raise CampaignError(
            f"{directory / CAMPAIGN_FILE}: invalid experiment plan ({exc}); the "
            "file was edited or written by another syslrn"
        ) from None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _lost_events(meta: dict[str, Any]) -> int | None:
    """Return the events that the recording lost, or None without a count.

    ``lost_events`` counts the events dropped because the ring buffer was
    full. The other counters under ``lost`` mostly count degraded fields;
    labels.json keeps them as ``lost_counters``.
    """
    lost = meta.get("lost_events")
    return None if lost is None else int(lost)
