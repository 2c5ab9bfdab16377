"""DeepLog: a next-key LSTM that flags sessions whose log keys it did not expect.

DeepLog (Du, Li, Zheng and Srikumar, "DeepLog: Anomaly Detection and
Diagnosis from System Logs through Deep Learning", ACM CCS 2017) reads a
session's log keys in order. From the ``window`` keys before each position it
predicts a probability for every key learned in training, and the key that
actually follows must be among the ``top_g`` most probable ones. A session is
anomalous at its first key outside the top g. A key never seen in training
is outside the top g for every g.

This implementation predicts every key of a session, the first one included:
the history of a key near the start is left-padded with a padding symbol
that is never a prediction target. A session shorter than the window is
therefore judged on the keys it has, and the padding is never an anomaly.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from syslrn.baselines.logparse import UNKNOWN_KEY
from syslrn.errors import LogError
from syslrn.text import format_count

log = logging.getLogger(__name__)

#: The DeepLog paper's number of candidate keys g.
DEFAULT_TOP_G = 9

#: Rank given to a key never seen in training: above every possible g.
UNKNOWN_RANK = np.iinfo(np.int64).max

# Input symbols: 0 pads the history, 1..K are the training keys and K + 1
# is any key unseen in training.
_PAD = 0

# Windows per forward pass at inference, to bound memory.
_INFERENCE_BATCH = 4096


class _NextKeyLSTM(nn.Module):
    """Stacked LSTM over one-hot keys, with a linear layer to next-key logits."""

    def __init__(self, n_inputs: int, n_keys: int, hidden_size: int, n_layers: int):
        super().__init__()
        self.n_inputs = n_inputs
        self.lstm = nn.LSTM(n_inputs, hidden_size, n_layers, batch_first=True)
        self.output = nn.Linear(hidden_size, n_keys)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        inputs = F.one_hot(windows, self.n_inputs).float()
        states, _ = self.lstm(inputs)
        return self.output(states[:, -1])


class DeepLog:
    """DeepLog next-key detector for sessions of log keys.

    Parameters
    ----------
    window : int
        History length h: the number of preceding keys that the model reads
        to predict the next one. The DeepLog paper's default is 10.
    top_g : int
        Number g of most probable keys a session's next key must be among.
        The paper's default is 9.
    n_layers : int
        Stacked LSTM layers (paper: 2).
    hidden_size : int
        Units per LSTM layer (paper: 64).
    epochs : int
        Passes over the training windows.
    batch_size : int
        Training windows per optimizer step.
    learning_rate : float
        Step size of the Adam optimizer.
    seed : int
        Seed of the weight initialisation and of the order of the windows.
    n_threads : int
        Threads that PyTorch uses, set with :func:`torch.set_num_threads` for
        the whole process on each fit and prediction.

    Attributes
    ----------
    keys_ : list of str
        Keys learned in training, in the order of the model's outputs.
    n_windows_ : int
        Training windows, repeats included.
    n_distinct_windows_ : int
        Distinct (history, next key) pairs that training optimised over,
        each weighted by its number of repeats.
    loss_ : float
        Mean cross-entropy of the training windows after the last epoch.
    """

    def __init__(
        self,
        window: int = 10,
        top_g: int = DEFAULT_TOP_G,
        *,
        n_layers: int = 2,
        hidden_size: int = 64,
        epochs: int = 100,
        batch_size: int = 64,
        learning_rate: float = 1e-2,
        seed: int = 0,
        n_threads: int = 1,
    ):
        self.window = window
        self.top_g = top_g
        self.n_layers = n_layers
        self.hidden_size = hidden_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.seed = seed
        self.n_threads = n_threads

    def fit(self, sequences: Sequence[Sequence[str]]) -> DeepLog:
        """Train the next-key model on failure-free sessions.

        Parameters
        ----------
        sequences : sequence of sequence of str
            The log keys of each training session. :data:`UNKNOWN_KEY` is
            never learned, so it stays an anomaly at test time.

        Returns
        -------
        self
        """
        self._validate_parameters()
        keys = sorted({key for seq in sequences for key in seq} - {UNKNOWN_KEY})
        if not keys:
            raise LogError(
                "empty training set: no failure-free session has a log key; "
                "train on runs whose logs have sessions"
            )
        self.keys_ = keys
        self._index = {key: i + 1 for i, key in enumerate(keys)}

        counts: Counter[tuple[int, ...]] = Counter()
        for seq in sequences:
            for history, target in self._windows(seq):
                if target <= len(keys):
                    counts[history + (target,)] += 1
        self.n_windows_ = sum(counts.values())
        self.n_distinct_windows_ = len(counts)

        torch.set_num_threads(self.n_threads)
        torch.manual_seed(self.seed)
        self.module_ = _NextKeyLSTM(
            len(keys) + 2, len(keys), self.hidden_size, self.n_layers
        )
        self.loss_ = self._train(counts)
        log.info(
            "DeepLog trained on %s (%d distinct) over %s, final loss %.4f",
            format_count(self.n_windows_, "window"),
            self.n_distinct_windows_,
            format_count(len(keys), "key"),
            self.loss_,
        )
        return self

    def key_ranks(self, sequences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Rank each key of each session among the model's predictions.

        Parameters
        ----------
        sequences : sequence of sequence of str

        Returns
        -------
        list of numpy.ndarray of int64
            For each session, the rank of each of its keys among the model's
            next-key predictions at that position: 1 for the most probable
            key. A key is in the top g when its rank is at most g. Keys unseen
            in training get :data:`UNKNOWN_RANK`.
        """
        self._check_fitted()
        pairs = [list(self._windows(seq)) for seq in sequences]
        distinct = list(dict.fromkeys(history for seq in pairs for history, _ in seq))
        logits = self._logits(distinct)
        row = {history: i for i, history in enumerate(distinct)}
        n_keys = len(self.keys_)

        ranks = []
        for seq in pairs:
            seq_ranks = np.empty(len(seq), dtype=np.int64)
            for position, (history, target) in enumerate(seq):
                if target > n_keys:
                    seq_ranks[position] = UNKNOWN_RANK
                    continue
                scores = logits[row[history]]
                seq_ranks[position] = 1 + int(
                    np.count_nonzero(scores > scores[target - 1])
                )
            ranks.append(seq_ranks)
        return ranks

    def predict(
        self, sequences: Sequence[Sequence[str]], top_g: int | None = None
    ) -> np.ndarray:
        """Flag the sessions that have a key outside the top g.

        Parameters
        ----------
        sequences : sequence of sequence of str
        top_g : int, optional
            g to judge with, instead of the ``top_g`` parameter.

        Returns
        -------
        numpy.ndarray of bool
            True for each anomalous session.
        """
        g = self.top_g if top_g is None else top_g
        return np.array(
            [bool(np.any(r > g)) for r in self.key_ranks(sequences)], dtype=bool
        )

    def first_anomalies(
        self, sequences: Sequence[Sequence[str]], top_g: int | None = None
    ) -> list[int | None]:
        """Return the position of each session's first key outside the top g.

        The entry of a normal session is None. ``top_g`` overrides the
        parameter.
        """
        g = self.top_g if top_g is None else top_g
        positions: list[int | None] = []
        for ranks in self.key_ranks(sequences):
            outside = np.flatnonzero(ranks > g)
            positions.append(int(outside[0]) if len(outside) else None)
        return positions

    def _windows(self, seq: Sequence[str]):
        """Yield (history, next key) index pairs for every key of ``seq``."""
        unknown = len(self.keys_) + 1
        indices = [self._index.get(key, unknown) for key in seq]
        padded = [_PAD] * self.window + indices
        for position, target in enumerate(indices):
            yield tuple(padded[position : position + self.window]), target

    def _train(self, counts: Counter[tuple[int, ...]]) -> float:
        rows = torch.tensor(list(counts.keys()), dtype=torch.long)
        windows, targets = rows[:, :-1], rows[:, -1] - 1
        weights = torch.tensor(list(counts.values()), dtype=torch.float32)
        total = float(weights.sum())
        optimizer = torch.optim.Adam(self.module_.parameters(), lr=self.learning_rate)
        generator = torch.Generator().manual_seed(self.seed)

        self.module_.train()
        loss_sum = 0.0
        for _ in range(self.epochs):
            loss_sum = 0.0
            order = torch.randperm(len(rows), generator=generator)
            for start in range(0, len(rows), self.batch_size):
                batch = order[start : start + self.batch_size]
                losses = F.cross_entropy(
                    self.module_(windows[batch]), targets[batch], reduction="none"
                )
                # One row replaces all repeats of a window, so its loss is
                # weighted by the number of times it occurred in training.
                loss = (losses * weights[batch]).sum() / weights[batch].sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_sum += float((losses.detach() * weights[batch]).sum())
        self.module_.eval()
        return loss_sum / total

    def _logits(self, histories: list[tuple[int, ...]]) -> np.ndarray:
        if not histories:
            return np.empty((0, len(self.keys_)), dtype=np.float32)
        torch.set_num_threads(self.n_threads)
        windows = torch.tensor(histories, dtype=torch.long)
        parts = []
        with torch.no_grad():
            for start in range(0, len(windows), _INFERENCE_BATCH):
                parts.append(
                    self.module_(windows[start : start + _INFERENCE_BATCH]).numpy()
                )
        return np.concatenate(parts)

    def _validate_parameters(self) -> None:
        for name in (
            "window",
            "top_g",
            "n_layers",
            "hidden_size",
            "epochs",
            "batch_size",
            "n_threads",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if not self.learning_rate > 0:
            raise ValueError(
                f"learning_rate={self.learning_rate!r}: expected a positive number"
            )

    def _check_fitted(self) -> None:
        if not hasattr(self, "module_"):
            raise RuntimeError("DeepLog used before fit")


def select_top_g(
    max_ranks: Sequence[int], n_keys: int, max_false_alarm: float = 0.0
) -> int:
    """Choose g on validation data: the smallest g with few false alarms.

    Parameters
    ----------
    max_ranks : sequence of int
        For each failure-free validation unit (a session, or an experiment
        when experiments are judged), the largest key rank among its
        sessions. The unit is flagged at g when this rank exceeds g.
    n_keys : int
        Number of keys learned in training: the largest useful g.
    max_false_alarm : float
        Fraction of validation units that may be flagged. Units with a key
        unseen in training are flagged at every g, so when they alone exceed
        this fraction, the g that flags nothing else is returned.

    Returns
    -------
    int
        The chosen g, between 1 and ``n_keys``.
    """
    ranks = np.asarray(max_ranks, dtype=np.int64)
    if ranks.size == 0:
        raise ValueError("select_top_g needs at least one validation unit")
    if n_keys < 1:
        raise ValueError(f"n_keys={n_keys}: expected a positive integer")
    floor = float(np.mean(ranks > n_keys))
    allowed = max(max_false_alarm, floor)
    for g in range(1, n_keys + 1):
        if float(np.mean(ranks > g)) <= allowed:
            return g
    return n_keys


def validation_split(
    n_units: int, fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Split training units into a fitting part and a validation part.

    Parameters
    ----------
    n_units : int
        Training units (sessions or experiments), indexed 0 to n - 1.
    fraction : float
        Share of units held out for validation, rounded and kept between one
        unit and all but one.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    (list of int, list of int)
        Sorted indices of the fitting units and of the validation units.
    """
    if n_units < 2:
        raise LogError(
            f"only {n_units} failure-free training unit(s): choosing g on a "
            "validation split needs at least 2; give a fixed g instead"
        )
    if not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction!r}: expected a number between 0 and 1")
    n_validation = min(max(1, round(n_units * fraction)), n_units - 1)
    order = np.random.default_rng(seed).permutation(n_units)
    return sorted(int(i) for i in order[n_validation:]), sorted(
        int(i) for i in order[:n_validation]
    )
