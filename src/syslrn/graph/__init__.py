"""System graphs, one per run, built from its trace, and the merging of host traces."""

from syslrn.graph.build import build_graph, is_driven
from syslrn.graph.merge import merge_traces
from syslrn.graph.system import EDGE_KINDS, EXTERNAL, SystemGraph

__all__ = [
    "EDGE_KINDS",
    "EXTERNAL",
    "SystemGraph",
    "build_graph",
    "is_driven",
    "merge_traces",
]
