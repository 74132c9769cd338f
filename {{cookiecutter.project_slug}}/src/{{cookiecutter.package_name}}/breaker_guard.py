"""One call protected by a circuit breaker: ``async with breaker.guard(): ...``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

    from {{ cookiecutter.package_name }}.resilience import CircuitBreaker

__all__ = ["Guard"]


class Guard:
    """One protected call: admission on enter, outcome on exit.

    A plain class with slots is cheaper than ``@asynccontextmanager`` on this hot path.
    """

    __slots__ = ("_admitted", "_breaker")

    def __init__(self, breaker: CircuitBreaker) -> None:
        """Guard one call through `breaker`."""
        self._breaker = breaker
        self._admitted = (0, 0.0)

    async def __aenter__(self) -> None:
        """Admit the call, or raise `CircuitOpenError`."""
        self._admitted = self._breaker.admit()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Record the call's outcome."""
        self._breaker.settle(self._admitted, exc)
