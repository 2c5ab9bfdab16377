"""The system graph of one run, held in numpy arrays.

Nodes are process instances plus external endpoints. Edges are spawns, unix
IPC and TCP connections. A trace of a million events yields a few hundred
thousand nodes and edges, and networkx needs microseconds to store each
edge. The graph therefore keeps flat arrays, and builds a networkx view only
on request (:meth:`SystemGraph.to_networkx`) for drawing and exploration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import networkx as nx

#: Edge kinds, indexed by the values of :attr:`SystemGraph.edge_kind`.
EDGE_KINDS = ("spawn", "ipc", "net")
SPAWN, IPC, NET = range(len(EDGE_KINDS))

#: Node type of every external endpoint.
EXTERNAL = "external"


@dataclass
class SystemGraph:
    """Processes and the connections between them, for one run.

    Node ``i`` has type ``type_names[type_index[i]]``. Process nodes carry
    their identity (``hosts[host_index[i]]``, ``pid[i]``, ``start_ns[i]``);
    external nodes have ``pid == -1`` and an ``address``.

    Attributes
    ----------
    type_names : list of str
        Node types of this graph, sorted.
    type_index : ndarray of int32, shape (n_nodes,)
    hosts : list of str
    host_index : ndarray of int32, shape (n_nodes,)
        Host of a process; for an external node, the host whose view it
        belongs to (loopback and unix endpoints), or -1.
    pid : ndarray of int32, shape (n_nodes,)
    start_ns : ndarray of uint64, shape (n_nodes,)
    external : ndarray of bool, shape (n_nodes,)
    driver : ndarray of bool, shape (n_nodes,)
        The process has rows flagged as the workload driver's.
    created : ndarray of bool, shape (n_nodes,)
        The process was forked while the trace was recorded.
    address : dict of int to str
        Remote address of each external node, e.g. ``inet:10.0.0.5``.
    src, dst : ndarray of int64, shape (n_edges,)
        Edge ends; spawn edges go parent -> child, connections client ->
        server (connect -> accept).
    edge_kind : ndarray of uint8, shape (n_edges,)
        Index into :data:`EDGE_KINDS`.
    driven : bool
        The run is labelled ``driven=true``: its driver processes are a
        client outside the system under test.
    name : str
    requests : int or None
    labels : dict of str to str
    """

    type_names: list[str]
    type_index: np.ndarray
    hosts: list[str]
    host_index: np.ndarray
    pid: np.ndarray
    start_ns: np.ndarray
    external: np.ndarray
    driver: np.ndarray
    created: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    edge_kind: np.ndarray
    address: dict[int, str] = field(default_factory=dict)
    driven: bool = False
    name: str = ""
    requests: int | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return int(self.type_index.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.src.shape[0])

    def degree(self) -> np.ndarray:
        """Return the multigraph degree of every node: each edge adds one to
        each of its ends, whatever its direction."""
        n = self.n_nodes
        return np.bincount(self.src, minlength=n) + np.bincount(self.dst, minlength=n)

    def node_types(self) -> np.ndarray:
        """Return the node type of every node as an array of str."""
        return np.asarray(self.type_names, dtype=object)[self.type_index]

    def node_key(self, i: int) -> tuple:
        """Return the networkx key of node ``i``: ``(host, pid, start_ns)``
        for a process, ``("external", address)`` for an endpoint."""
        if self.external[i]:
            return (EXTERNAL, self.address[i])
        return (self.hosts[self.host_index[i]], int(self.pid[i]), int(self.start_ns[i]))

    def feature_mask(
        self, include_driver: bool = False, include_external: bool = False
    ) -> np.ndarray:
        """Return which nodes produce features.

        External endpoints never do unless ``include_external``. In a driven
        run the driver's processes do not either unless ``include_driver``;
        their edges still count in the degree of the processes they touch.
        """
        mask = np.ones(self.n_nodes, dtype=bool)
        if not include_external:
            mask &= ~self.external
        if self.driven and not include_driver:
            mask &= ~self.driver
        return mask

    def to_networkx(self) -> nx.MultiDiGraph:
        """Return the graph as a networkx MultiDiGraph.

        Node attributes: ``node_type``, ``external``, ``driver``,
        ``created``, and ``host``/``pid``/``start_ns`` for processes or
        ``address`` for external endpoints. Edge attribute: ``kind``.
        """
        # Imported here: networkx takes a second to import and only drawing
        # and exploration need it.
        import networkx as nx

        graph = nx.MultiDiGraph(
            name=self.name,
            driven=self.driven,
            requests=self.requests,
            labels=dict(self.labels),
        )
        keys = [self.node_key(i) for i in range(self.n_nodes)]
        names = self.type_names
        for i, key in enumerate(keys):
            attrs = {
                "node_type": names[self.type_index[i]],
                "external": bool(self.external[i]),
                "driver": bool(self.driver[i]),
                "created": bool(self.created[i]),
            }
            if self.external[i]:
                attrs["address"] = self.address[i]
            else:
                attrs.update(host=key[0], pid=key[1], start_ns=key[2])
            graph.add_node(key, **attrs)
        graph.add_edges_from(
            (keys[u], keys[v], {"kind": EDGE_KINDS[k]})
            for u, v, k in zip(
                self.src.tolist(),
                self.dst.tolist(),
                self.edge_kind.tolist(),
                strict=True,
            )
        )
        return graph
