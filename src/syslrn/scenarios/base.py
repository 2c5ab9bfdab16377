"""The interface every scenario implements.

A scenario is a real application from a Debian package, set up in a
temporary directory and listening on loopback only, with a workload driver
that issues an exact number of requests and a catalogue of named faults.
The campaign runner drives it through this interface only.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class WorkloadResult:
    """The outcome of one batch of requests, as the workload driver saw it."""

    requests: int
    errors: int = 0
    # Short descriptions of the first errors seen, for the labels.
    messages: list[str] = field(default_factory=list)
    duration_s: float = 0.0


@dataclass(frozen=True)
class LogSource:
    """One component's log: where it is, and how to group it into sessions.

    ``session_regex`` has one group, the identifier that ties the lines of
    one session (a queue id, a backend pid, an instance id). ``masks`` are
    ``(regex, name)`` pairs, applied in order: a log parser replaces each
    match with ``<name>`` before it mines templates, so that timestamps,
    ids and numbers do not split one message into many templates.
    """

    component: str
    path: Path
    session_regex: str
    masks: tuple[tuple[str, str], ...] = ()


class Fault(abc.ABC):
    """A named failure that a scenario can apply and revert."""

    name: str = ""
    description: str = ""

    @abc.abstractmethod
    def apply(self) -> None:
        """Inject the fault into the running application."""

    @abc.abstractmethod
    def revert(self) -> None:
        """Undo :meth:`apply`, leaving the application as before."""


class Scenario(abc.ABC):
    """A real application driven for syslrn's experiments.

    :attr:`trigger`, :meth:`faults` and :meth:`logs` must work before
    :meth:`setup`: the campaign runner plans its experiments and records the
    start-up phase before the servers exist. Fault names and log paths must
    not change across set-ups.
    """

    #: Short name used on the command line and in labels.
    name: str = ""
    #: Debian packages the scenario installs with apt-get when missing.
    packages: tuple[str, ...] = ()

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)

    @property
    @abc.abstractmethod
    def trigger(self) -> str:
        """The service socket whose accepted connections count as requests,
        as ``tcp:PORT`` or ``unix:PATH``."""

    @abc.abstractmethod
    def setup(self) -> None:
        """Install if needed, configure in :attr:`workdir`, start the servers."""

    @abc.abstractmethod
    def check(self) -> None:
        """Verify that the application serves requests; raise if not."""

    @abc.abstractmethod
    def run_workload(self, n: int) -> WorkloadResult:
        """Issue exactly ``n`` requests and return when all have completed."""

    @abc.abstractmethod
    def faults(self) -> dict[str, Fault]:
        """Return the catalogue of named faults."""

    @abc.abstractmethod
    def logs(self) -> list[LogSource]:
        """Return the log files to collect after each experiment."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Bring the application back to its state after :meth:`setup`."""

    @abc.abstractmethod
    def teardown(self) -> None:
        """Stop what :meth:`setup` started (by PID) and remove its files."""

    def __enter__(self) -> Scenario:
        self.setup()
        return self

    def __exit__(self, *exc_info) -> None:
        self.teardown()
