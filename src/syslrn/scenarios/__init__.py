"""Real applications driven for syslrn's experiments.

Scenarios are looked up by name and imported only when requested, so that a
scenario's dependencies are needed only by the runs that use it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from syslrn.scenarios.base import Scenario
from syslrn.scenarios.support import ScenarioError

#: Scenario name -> "module:class" of its implementation.
SCENARIOS = {
    "postgres": "syslrn.scenarios.postgres:PostgresScenario",
    "postfix": "syslrn.scenarios.postfix:PostfixScenario",
    "ssh": "syslrn.scenarios.ssh:SshScenario",
}


def scenario_class(name: str) -> type[Scenario]:
    """Import and return the scenario class registered as ``name``.

    Raises
    ------
    ScenarioError
        No scenario is registered under ``name``.
    """
    target = SCENARIOS.get(name)
    if target is None:
        known = ", ".join(sorted(SCENARIOS))
        raise ScenarioError(f"unknown scenario {name!r}; choose one of: {known}")
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


def get_scenario(name: str, workdir: str | Path) -> Scenario:
    """Return a new instance of the scenario ``name`` working in ``workdir``."""
    return scenario_class(name)(Path(workdir))
