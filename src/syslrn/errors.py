"""Errors that syslrn reports to the user as one line, without a traceback."""


class SyslrnError(Exception):
    """An error caused by input or by the host, with a message that gives the fix.

    The command line prints the message and exits with ``exit_code``.
    """

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class TraceError(SyslrnError):
    """A trace file is missing, truncated, corrupt or of another version."""


class BpfError(SyslrnError):
    """A BPF object failed to build, load or attach."""

    #: The errno of a failed system call, when one caused the error.
    errno: int | None = None


class ModelError(SyslrnError):
    """A model file is invalid or of another schema version."""


class LogError(SyslrnError):
    """Logs or log-key sequences cannot be turned into sessions for a log detector."""


class CampaignError(SyslrnError):
    """A campaign directory is missing a file or has an invalid index or layout."""
