"""Evaluation of DeepLog on labelled key sequences and on campaign folds.

On a campaign, DeepLog gets the folds of :func:`syslrn.evaluate.folds.make_folds`
over the workload experiments sorted by id, the same folds as syslrn's own
detectors. In each fold and for each component, log templates and the
next-key model are learned on the logs of the fold's failure-free training
experiments only, and g is fixed or chosen on a validation split of those
experiments. An experiment is anomalous for a component when any of its
sessions is. It is anomalous in the combined configuration when any
component flags it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from syslrn.baselines.campaign import Campaign, ComponentLog, Experiment, load_campaign
from syslrn.baselines.deeplog import (
    DEFAULT_TOP_G,
    DeepLog,
    select_top_g,
    validation_split,
)
from syslrn.baselines.logparse import LogKeyParser
from syslrn.baselines.scores import DetectionScores
from syslrn.baselines.sessions import SessionGrouper, read_log_lines
from syslrn.errors import CampaignError, LogError
from syslrn.evaluate.folds import DEFAULT_FOLDS, DEFAULT_SEED, make_folds
from syslrn.text import format_count

log = logging.getLogger(__name__)

#: Name of the configuration that flags an experiment when any component does.
COMBINED = "combined"

# A session: its identifier and its masked messages.
_Session = tuple[str, list[str]]


@dataclass(frozen=True)
class DeepLogConfig:
    """How to parse logs, train DeepLog and choose g.

    ``top_g`` None chooses g on a validation split of the training data: the
    smallest g that flags at most ``max_false_alarm`` of the held-out
    failure-free units (sessions, or experiments on a campaign).
    ``model_params`` are further keyword arguments of
    :class:`~syslrn.baselines.deeplog.DeepLog`, and ``parser_params`` those
    of :class:`~syslrn.baselines.logparse.LogKeyParser`.
    """

    top_g: int | None = DEFAULT_TOP_G
    model_params: Mapping[str, Any] = field(default_factory=dict)
    parser_params: Mapping[str, Any] = field(default_factory=dict)
    validation_fraction: float = 0.2
    max_false_alarm: float = 0.0

    def new_model(self, top_g: int) -> DeepLog:
        """Return an untrained DeepLog with this configuration and ``top_g``."""
        return DeepLog(top_g=top_g, **self.model_params)

    @property
    def seed(self) -> int:
        return int(self.model_params.get("seed", 0))


# Key sequences -------------------------------------------------------------


@dataclass
class SequenceEvaluation:
    """DeepLog's verdicts on sessions labelled normal or abnormal."""

    top_g: int
    n_keys: int
    train_sessions: int
    #: Abnormal sessions count as failures.
    scores: DetectionScores
    #: Wall-clock seconds of training, the choice of g included.
    train_seconds: float
    #: Wall-clock seconds to judge every test session.
    inference_seconds: float

    @property
    def test_sessions(self) -> int:
        return self.scores.failures + self.scores.normals

    @property
    def sessions_per_second(self) -> float:
        return (
            self.test_sessions / self.inference_seconds
            if self.inference_seconds
            else 0.0
        )

    def to_dict(self) -> dict:
        return {
            "top_g": self.top_g,
            "n_keys": self.n_keys,
            "train_sessions": self.train_sessions,
            "test_sessions": self.test_sessions,
            "scores": self.scores.to_dict(),
            "train_seconds": self.train_seconds,
            "inference_seconds": self.inference_seconds,
            "sessions_per_second": self.sessions_per_second,
        }


def evaluate_sequences(
    train: Sequence[Sequence[str]],
    test_normal: Sequence[Sequence[str]],
    test_abnormal: Sequence[Sequence[str]],
    config: DeepLogConfig | None = None,
) -> SequenceEvaluation:
    """Train DeepLog on normal key sequences and judge labelled test sequences.

    Parameters
    ----------
    train : sequence of sequence of str
        Keys of the normal training sessions.
    test_normal, test_abnormal : sequence of sequence of str
        Keys of the normal and of the abnormal test sessions.
    config : DeepLogConfig, optional

    Returns
    -------
    SequenceEvaluation
    """
    config = config or DeepLogConfig()
    if not train:
        raise LogError(
            "empty training set: no training session; give normal sessions to train on"
        )

    started = time.perf_counter()
    top_g = config.top_g
    if top_g is None:
        fit, held_out = validation_split(
            len(train), config.validation_fraction, config.seed
        )
        probe = config.new_model(1).fit([train[i] for i in fit])
        max_ranks = [
            int(r.max()) for r in probe.key_ranks([train[i] for i in held_out])
        ]
        top_g = select_top_g(max_ranks, len(probe.keys_), config.max_false_alarm)
        log.info(
            "chose g=%d on %s",
            top_g,
            format_count(len(held_out), "validation session"),
        )
    model = config.new_model(top_g).fit(train)
    train_seconds = time.perf_counter() - started

    started = time.perf_counter()
    flagged_normal = model.predict(test_normal)
    flagged_abnormal = model.predict(test_abnormal)
    inference_seconds = time.perf_counter() - started

    scores = DetectionScores()
    for flagged in flagged_normal:
        scores.add(failure=False, flagged=bool(flagged))
    for flagged in flagged_abnormal:
        scores.add(failure=True, flagged=bool(flagged))
    return SequenceEvaluation(
        top_g=top_g,
        n_keys=len(model.keys_),
        train_sessions=len(train),
        scores=scores,
        train_seconds=train_seconds,
        inference_seconds=inference_seconds,
    )


# Campaigns -----------------------------------------------------------------


@dataclass
class FoldVerdicts:
    """DeepLog's verdicts in one fold of a campaign."""

    index: int
    #: Ids of the failure-free experiments trained on.
    train: tuple[str, ...]
    #: Ids of the experiments judged.
    test: tuple[str, ...]
    #: g used for each component.
    top_g: dict[str, int]
    #: Keys learned for each component.
    n_keys: dict[str, int]
    #: Configuration (a component or :data:`COMBINED`) -> experiment id -> flagged.
    verdicts: dict[str, dict[str, bool]]
    #: Component -> flagged experiment id -> its first session and key outside
    #: the top g.
    evidence: dict[str, dict[str, dict]]

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "train": list(self.train),
            "test": list(self.test),
            "top_g": self.top_g,
            "n_keys": self.n_keys,
            "verdicts": self.verdicts,
            "evidence": self.evidence,
        }


@dataclass
class CampaignEvaluation:
    """DeepLog's verdicts on every fold of a campaign."""

    directory: Path
    scenario: str
    components: list[str]
    #: Workload experiments in fold order (sorted by id).
    experiments: list[Experiment]
    folds: list[FoldVerdicts]

    @property
    def configurations(self) -> list[str]:
        """Return each component (the single configurations), then the combined one."""
        return [*self.components, COMBINED]

    def scores(self, configuration: str) -> DetectionScores:
        """Return scores pooled over folds.

        Each failure experiment is judged once per fold (every fold tests all
        of them) and each failure-free experiment once in all.
        """
        scores = DetectionScores()
        failure = {e.id: e.failure for e in self.experiments}
        for fold in self.folds:
            for experiment_id, flagged in fold.verdicts[configuration].items():
                scores.add(failure[experiment_id], flagged)
        return scores

    def fault_scores(self, configuration: str) -> dict[str, DetectionScores]:
        """Return pooled scores per injected fault, faults sorted by name."""
        by_id = {e.id: e for e in self.experiments}
        result: dict[str, DetectionScores] = {}
        for fold in self.folds:
            for experiment_id, flagged in fold.verdicts[configuration].items():
                experiment = by_id[experiment_id]
                if experiment.fault == "none":
                    continue
                scores = result.setdefault(experiment.fault, DetectionScores())
                scores.add(experiment.failure, flagged)
        return dict(sorted(result.items()))

    def to_dict(self) -> dict:
        return {
            "campaign": str(self.directory),
            "scenario": self.scenario,
            "components": self.components,
            "experiments": [
                {"id": e.id, "fault": e.fault, "failure": e.failure}
                for e in self.experiments
            ],
            "scores": {c: self.scores(c).to_dict() for c in self.configurations},
            "fault_scores": {
                c: {f: s.to_dict() for f, s in self.fault_scores(c).items()}
                for c in self.configurations
            },
            "folds": [fold.to_dict() for fold in self.folds],
        }


def evaluate_campaign(
    campaign: Campaign | str | Path,
    components: Sequence[str] | None = None,
    *,
    n_folds: int = DEFAULT_FOLDS,
    fold_seed: int = DEFAULT_SEED,
    config: DeepLogConfig | None = None,
) -> CampaignEvaluation:
    """Cross-validate DeepLog on a campaign's logs, in syslrn's folds.

    Parameters
    ----------
    campaign : Campaign, str or Path
        The campaign, or its directory.
    components : sequence of str, optional
        Components whose logs to use; all of the campaign's by default.
    n_folds : int
        Number of folds, as for ``syslrn evaluate``.
    fold_seed : int
        Seed of the folds, as for ``syslrn evaluate``.
    config : DeepLogConfig, optional

    Returns
    -------
    CampaignEvaluation
        Per-experiment verdicts of every fold, for each component and for
        the combined configuration.
    """
    if not isinstance(campaign, Campaign):
        campaign = load_campaign(campaign)
    config = config or DeepLogConfig()
    if components:
        sources = [campaign.source(c) for c in dict.fromkeys(components)]
    else:
        sources = list(campaign.log_sources)
    if any(s.component == COMBINED for s in sources):
        raise CampaignError(
            f"{campaign.directory}: a component is named {COMBINED!r}, which is "
            "reserved for the combined configuration; rename it in campaign.json"
        )

    experiments = campaign.workload_experiments()
    if not experiments:
        raise CampaignError(
            f"{campaign.directory}: no experiment of phase workload in the index"
        )
    try:
        folds = make_folds([e.failure for e in experiments], n_folds, fold_seed)
    except ValueError as exc:
        raise CampaignError(f"{campaign.directory}: {exc}") from None

    sessions = {
        source.component: _read_sessions(campaign, source, experiments, config)
        for source in sources
    }

    results = []
    for fold in folds:
        train_ids = [experiments[i].id for i in fold.train]
        test_ids = [experiments[i].id for i in fold.test]
        log.info(
            "fold %d/%d: %d training and %s",
            fold.index + 1,
            len(folds),
            len(train_ids),
            format_count(len(test_ids), "test experiment"),
        )
        result = FoldVerdicts(
            index=fold.index,
            train=tuple(train_ids),
            test=tuple(test_ids),
            top_g={},
            n_keys={},
            verdicts={},
            evidence={},
        )
        for source in sources:
            _judge_fold(source, sessions[source.component], result, config)
        result.verdicts[COMBINED] = {
            experiment_id: any(
                result.verdicts[s.component][experiment_id] for s in sources
            )
            for experiment_id in test_ids
        }
        results.append(result)

    return CampaignEvaluation(
        directory=campaign.directory,
        scenario=campaign.scenario,
        components=[s.component for s in sources],
        experiments=experiments,
        folds=results,
    )


def _read_sessions(
    campaign: Campaign,
    source: ComponentLog,
    experiments: list[Experiment],
    config: DeepLogConfig,
) -> dict[str, list[_Session]]:
    """Group each experiment's log into sessions of masked messages."""
    grouper = SessionGrouper(source.component, source.session_regex)
    parser = LogKeyParser(source.masks, **config.parser_params)
    masked: dict[str, str] = {}
    sessions: dict[str, list[_Session]] = {}
    missing = 0
    for experiment in experiments:
        path = experiment.log_path(source)
        if not path.is_file():
            # A component that crashed early may leave no log. The experiment
            # then has no sessions for it, which is also what DeepLog sees.
            log.warning("%s: log of component %s not found", path, source.component)
            missing += 1
            sessions[experiment.id] = []
            continue
        grouped = grouper.group(read_log_lines(path))
        sessions[experiment.id] = [
            (session_id, [_mask(parser, message, masked) for message in messages])
            for session_id, messages in grouped.items()
        ]

    if missing == len(experiments):
        raise LogError(
            f"component {source.component!r}: log file {source.file} not found in "
            f"any of the {format_count(len(experiments), 'workload experiment')} of "
            f"{campaign.directory}"
        )
    grouper.check_matched(f"the workload experiments of {campaign.directory}")
    return sessions


def _mask(parser: LogKeyParser, message: str, cache: dict[str, str]) -> str:
    result = cache.get(message)
    if result is None:
        result = cache[message] = parser.mask(message)
    return result


def _judge_fold(
    source: ComponentLog,
    sessions: dict[str, list[_Session]],
    result: FoldVerdicts,
    config: DeepLogConfig,
) -> None:
    """Train on the fold's training experiments and judge its test experiments."""
    top_g = config.top_g
    if top_g is None:
        top_g = _choose_top_g(
            source, sessions, list(result.train), result.index, config
        )
    parser, model = _fit(
        source, sessions, list(result.train), result.index, config, top_g
    )

    flat = [
        (experiment_id, session_id, parser.transform(messages, masked=True))
        for experiment_id in result.test
        for session_id, messages in sessions[experiment_id]
    ]
    ranks = model.key_ranks([keys for _, _, keys in flat])

    verdicts = dict.fromkeys(result.test, False)
    evidence: dict[str, dict] = {}
    for (experiment_id, session_id, keys), session_ranks in zip(
        flat, ranks, strict=True
    ):
        outside = np.flatnonzero(session_ranks > top_g)
        if not len(outside) or verdicts[experiment_id]:
            continue
        position = int(outside[0])
        verdicts[experiment_id] = True
        evidence[experiment_id] = {
            "session": session_id,
            "position": position,
            "key": keys[position],
            "template": parser.templates_.get(keys[position]),
        }

    result.top_g[source.component] = top_g
    result.n_keys[source.component] = len(model.keys_)
    result.verdicts[source.component] = verdicts
    result.evidence[source.component] = evidence


def _fit(
    source: ComponentLog,
    sessions: dict[str, list[_Session]],
    train_ids: list[str],
    fold_index: int,
    config: DeepLogConfig,
    top_g: int,
) -> tuple[LogKeyParser, DeepLog]:
    training = [messages for i in train_ids for _, messages in sessions[i]]
    if not training:
        raise LogError(
            f"component {source.component!r}: empty training set in fold "
            f"{fold_index}: none of its "
            f"{format_count(len(train_ids), 'failure-free experiment')} "
            f"has a line matching the session regex '{source.session_regex}'; "
            "fix the regex or leave the component out"
        )
    parser = LogKeyParser(source.masks, **config.parser_params)
    parser.fit((m for messages in training for m in messages), masked=True)
    keys = [parser.transform(messages, masked=True) for messages in training]
    model = config.new_model(top_g).fit(keys)
    return parser, model


def _choose_top_g(
    source: ComponentLog,
    sessions: dict[str, list[_Session]],
    train_ids: list[str],
    fold_index: int,
    config: DeepLogConfig,
) -> int:
    """Choose g on a validation split of the fold's training experiments."""
    fit, held_out = validation_split(
        len(train_ids), config.validation_fraction, config.seed
    )
    parser, model = _fit(
        source, sessions, [train_ids[i] for i in fit], fold_index, config, 1
    )

    # An experiment without sessions has nothing to flag: rank 0 passes any g.
    max_ranks = []
    for i in held_out:
        keys = [
            parser.transform(messages, masked=True)
            for _, messages in sessions[train_ids[i]]
        ]
        ranks = model.key_ranks(keys)
        max_ranks.append(max((int(r.max()) for r in ranks), default=0))
    top_g = select_top_g(max_ranks, len(model.keys_), config.max_false_alarm)
    log.info(
        "fold %d, component %s: chose g=%d on %s",
        fold_index,
        source.component,
        top_g,
        format_count(len(held_out), "validation experiment"),
    )
    return top_g
