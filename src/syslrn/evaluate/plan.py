"""The plan of a campaign: its parameters and the experiments drawn from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from syslrn.errors import CampaignError
from syslrn.evaluate.dataset import NO_FAULT

DEFAULT_SIZES = (1, 2, 4, 8)
DEFAULT_FAULT_RATIO = 0.5
DEFAULT_STARTUP_RUNS = 2
DEFAULT_IDLE_RUNS = 2
DEFAULT_IDLE_SECONDS = 2.0


@dataclass(frozen=True)
class CampaignParams:
    """Parameters of a campaign, stored in campaign.json so that it can resume.

    Parameters
    ----------
    runs : int
        Number of workload experiments.
    sizes : tuple of int
        Workload sizes (requests per experiment); each is used about equally
        often.
    fault_ratio : float
        Fraction of the workload experiments that get a fault, in [0, 1].
        The faults of the catalogue are used about equally often.
    seed : int
        Seed of the plan's random draws.
    startup_runs, idle_runs : int
        Number of experiments of the startup and idle phases.
    idle_seconds : float
        Length of an idle recording, in seconds.
    """

    runs: int
    sizes: tuple[int, ...] = DEFAULT_SIZES
    fault_ratio: float = DEFAULT_FAULT_RATIO
    seed: int = 0
    startup_runs: int = DEFAULT_STARTUP_RUNS
    idle_runs: int = DEFAULT_IDLE_RUNS
    idle_seconds: float = DEFAULT_IDLE_SECONDS

    def __post_init__(self):
        object.__setattr__(self, "sizes", tuple(int(size) for size in self.sizes))
        if self.runs < 0:
            raise CampaignError(f"runs={self.runs}: give zero or more workload runs")
        if not self.sizes or min(self.sizes) < 1:
            raise CampaignError(
                f"sizes={list(self.sizes)}: give one or more sizes of at least 1"
            )
        if not 0.0 <= self.fault_ratio <= 1.0:
            raise CampaignError(
                f"fault_ratio={self.fault_ratio}: give a fraction between 0 and 1"
            )
        if self.startup_runs < 0 or self.idle_runs < 0:
            raise CampaignError(
                f"startup_runs={self.startup_runs}, idle_runs={self.idle_runs}: "
                "give zero or more"
            )
        if self.idle_seconds <= 0:
            raise CampaignError(
                f"idle_seconds={self.idle_seconds}: give a positive duration"
            )

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["sizes"] = list(self.sizes)
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> CampaignParams:
        try:
            return cls(**document)
        except TypeError as exc:
            raise CampaignError(f"campaign parameters {document}: {exc}") from None


@dataclass(frozen=True)
class Experiment:
    """One planned experiment."""

    id: str
    phase: str
    requested: int
    fault: str = NO_FAULT

    def describe(self) -> str:
        text = f"{self.id} {self.phase}"
        if self.phase == "workload":
            text += f" n={self.requested}"
        if self.fault != NO_FAULT:
            text += f" {self.fault}"
        return text


def plan_campaign(
    params: CampaignParams, fault_names: Sequence[str]
) -> list[Experiment]:
    """Draw the experiments of a campaign, the same ones for the same inputs.

    Startup experiments come first, because each one sets the scenario up
    from scratch. Idle and workload experiments follow in a shuffled order,
    so that faults and sizes are spread over the campaign's duration.
    """
    rng = np.random.default_rng(params.seed)
    sizes = [params.sizes[i % len(params.sizes)] for i in range(params.runs)]
    rng.shuffle(sizes)

    n_faulty = int(params.runs * params.fault_ratio + 0.5) if fault_names else 0
    catalogue = [str(name) for name in rng.permutation(sorted(fault_names))]
    faults = [catalogue[i % len(catalogue)] for i in range(n_faulty)]
    faults += [NO_FAULT] * (params.runs - n_faulty)
    rng.shuffle(faults)

    body = [
        ("workload", size, fault) for size, fault in zip(sizes, faults, strict=True)
    ]
    body += [("idle", 0, NO_FAULT)] * params.idle_runs
    order = rng.permutation(len(body))
    entries = [("startup", 0, NO_FAULT)] * params.startup_runs
    entries += [body[i] for i in order]

    width = max(4, len(str(len(entries))))
    return [
        Experiment(
            id=f"e{i + 1:0{width}d}", phase=phase, requested=int(size), fault=fault
        )
        for i, (phase, size, fault) in enumerate(entries)
    ]
