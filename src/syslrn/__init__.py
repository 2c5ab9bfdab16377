"""syslrn: learn which OS-level features follow an application's workload,
then monitor only those with small eBPF programs."""

__version__ = "0.1.0"
