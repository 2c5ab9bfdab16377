"""Program sizes: instructions of the planned programs and of the recorder's,
as the kernel's verifier translated them."""

from __future__ import annotations

from syslrn.collect.build import build_object
from syslrn.collect.libbpf import BpfObject
from syslrn.collect.recorder import configure
from syslrn.monitor.kernel import OBJECT_NAME, MonitorProbes
from syslrn.monitor.plan import MonitorPlan


def _loaded_sizes(obj: BpfObject, programs: list[str]) -> dict[str, int]:
    obj.select_programs(programs)
    obj.load()
    return {name: obj.program(name).insn_count for name in programs}


def planned_sizes(plan: MonitorPlan, trigger) -> dict[str, int]:
    """Load the plan's programs without attaching them; return their sizes."""
    probes = MonitorProbes(plan, trigger, quiet_s=1.0)
    with BpfObject(build_object(OBJECT_NAME)) as obj:
        probes._configure(obj)
        return _loaded_sizes(obj, list(plan.programs))


def recorder_sizes() -> dict[str, int]:
    """Return the sizes of the full recorder's attached programs."""
    with BpfObject(build_object("record")) as obj:
        configure(obj, None)
        names = [p.name for p in obj.programs() if not p.section.startswith("iter/")]
        return _loaded_sizes(obj, names)
