"""Classes of node types: system background, application background, workload-driven.

- workload-driven: a feature of the type was kept, so it follows requests.
- system-background: otherwise, when a process of the type was already
  alive when the baseline runs started: it runs whatever the application
  does. The baseline runs are the ``phase=startup`` runs, which record the
  application's start; without them, the earliest phase given (idle, then
  workload).
- application-background: the rest, the processes that the application
  brought up and that do not follow the workload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from syslrn.graph.system import SystemGraph

SYSTEM_BACKGROUND = "system-background"
APPLICATION_BACKGROUND = "application-background"
WORKLOAD_DRIVEN = "workload-driven"

CLASSES = (SYSTEM_BACKGROUND, APPLICATION_BACKGROUND, WORKLOAD_DRIVEN)

#: Phases in the order the baseline is chosen from.
PHASES = ("startup", "idle", "workload")


def classify_node_types(
    graphs_by_phase: Mapping[str, Sequence[SystemGraph]],
    workload_driven: Iterable[str],
    include_driver: bool = False,
) -> dict[str, str]:
    """Return the class of every node type that produces features.

    Parameters
    ----------
    graphs_by_phase : mapping of phase to graphs
        Graphs of the ``startup``, ``idle`` and ``workload`` runs.
    workload_driven : iterable of str
        Node types with at least one kept feature.
    include_driver : bool
        Whether the driver's processes count, as in the embedding.
    """
    driven = set(workload_driven)
    types: set[str] = set(driven)
    for graphs in graphs_by_phase.values():
        for graph in graphs:
            mask = graph.feature_mask(include_driver=include_driver)
            types.update(
                graph.type_names[t] for t in set(graph.type_index[mask].tolist())
            )

    baseline = next((graphs_by_phase[p] for p in PHASES if graphs_by_phase.get(p)), [])
    system: set[str] = set()
    for graph in baseline:
        alive = graph.feature_mask(include_driver=include_driver) & ~graph.created
        system.update(
            graph.type_names[t] for t in set(graph.type_index[alive].tolist())
        )

    classes = {}
    for node_type in sorted(types):
        if node_type in driven:
            classes[node_type] = WORKLOAD_DRIVEN
        elif node_type in system:
            classes[node_type] = SYSTEM_BACKGROUND
        else:
            classes[node_type] = APPLICATION_BACKGROUND
    return classes
