"""Request-time failures of the guard (load-time failures are ``BundleError``)."""

from __future__ import annotations


class GuardError(RuntimeError):
    """Scoring failed at request time; the gateway hook applies its fail mode."""


class GuardTimeout(GuardError):
    """A call did not get its verdict within its timeout."""


class GuardOverloaded(GuardError):
    """The micro-batcher's queue is full; the call was refused at once."""
