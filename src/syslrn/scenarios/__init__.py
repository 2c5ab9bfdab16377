"""Real applications that syslrn records, with workload drivers and faults.

Scenarios are looked up by name and imported only on request, so that
importing this package loads no application's code.
"""

from __future__ import annotations

from importlib import import_module

from syslrn.scenarios.base import Scenario
from syslrn.scenarios.support import ScenarioError

#: Scenario name -> "module:class" of its implementation.
SCENARIOS = {
    "postfix": "syslrn.scenarios.postfix:PostfixScenario",
    "ssh": "syslrn.scenarios.ssh:SshScenario",
}


def get_scenario(name: str) -> type[Scenario]:
    """Import and return the scenario class registered as ``name``."""
    try:
        target = SCENARIOS[name]
    except KeyError:
        raise ScenarioError(
            f"unknown scenario {name!r}; choose one of {', '.join(sorted(SCENARIOS))}"
        ) from None
    module, _, attribute = target.partition(":")
    return getattr(import_module(module), attribute)
