"""Shoal's exceptions: one class per kind of engine error.

Every error the engine raises is a :class:`ShoalError`, with the engine's one-line
message. Bad input is also a :class:`ValueError` and I/O trouble an :class:`OSError`, so
code written for pandas' exceptions keeps working.
"""

from __future__ import annotations


class ShoalError(Exception):
    """An error from the Shoal engine."""

    #: The engine's name for the kind (``input``, ``worker_lost``, ...).
    kind: str = "internal"
    #: Whether running the same job again may succeed without changes.
    retryable: bool = False


class InputError(ShoalError, ValueError):
    """Bad input: SQL, data, arguments or settings."""

    kind = "input"


class PlanningError(ShoalError):
    """A valid request the planner cannot run (not supported yet)."""

    kind = "planning"


class ResourcesError(ShoalError):
    """No worker can run it, or it does not fit in the workers' memory."""

    kind = "resources"
    retryable = True


class WorkerLostError(ShoalError):
    """Workers were lost more often than a job can recover from."""

    kind = "worker_lost"
    retryable = True


class FetchFailedError(ShoalError):
    """Results could not be fetched from a worker (the message names it)."""

    kind = "fetch_failed"
    retryable = True


class CancelledError(ShoalError):
    """The job was cancelled (from this session or another client)."""

    kind = "cancelled"


class ShoalIOError(ShoalError, OSError):
    """Reading, writing or reaching the cluster failed."""

    kind = "io"
    retryable = True


class InternalError(ShoalError):
    """A bug in Shoal."""

    kind = "internal"


KINDS: dict[str, type[ShoalError]] = {
    cls.kind: cls
    for cls in (
        InputError,
        PlanningError,
        ResourcesError,
        WorkerLostError,
        FetchFailedError,
        CancelledError,
        ShoalIOError,
        InternalError,
    )
}


def raise_kind(kind: str, message: str) -> ShoalError:
    """The exception for an engine error of ``kind`` (used by the native module)."""
    return KINDS.get(kind, InternalError)(message)
