"""Where the Mediator keeps verified registrations that wait for their partner.

Why an interface: the default is a dict in one process, but a fleet of mediators behind a load
balancer must pair peers that reached different instances, which needs a shared store (Redis, a
database). The operations are therefore few and each is atomic on its own, so a shared backend
can implement them with single commands (``SET``/``GETDEL``/compare-and-delete):

- :meth:`Registry.register` stores ``(our_key, their_key) -> handle`` and returns the handle it
  replaced (a duplicate registration), if any.
- :meth:`Registry.claim` atomically takes the *partner's* registration: the entry
  ``(their_key, our_key)``. Claiming is what makes pairing happen exactly once even when two
  instances race.
- :meth:`Registry.unregister` deletes an entry only if it still holds the given handle, so a
  session that was replaced or claimed can never delete its successor.

Keying by the ordered pair ``(our_key, their_key)`` makes mutual intent an O(1) lookup: A wants B
is stored at (A, B); when B (wanting A) is verified it claims (A, B). Handles are opaque to the
registry (the in-process core uses connection ids).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

__all__ = ["InMemoryRegistry", "Registry", "RegistryKey"]

RegistryKey = tuple[bytes, bytes]
"""(our_key, their_key): the raw 32-byte public keys of a registration."""


class Registry(Protocol):
    """Verified registrations waiting for a partner, keyed by (our_key, their_key)."""

    def register(self, our_key: bytes, their_key: bytes, handle: int) -> int | None:
        """Store the registration; return the handle of the one it replaced, if any."""
        ...

    def claim(self, our_key: bytes, their_key: bytes) -> int | None:
        """Atomically remove and return the partner entry ``(their_key, our_key)``, if any."""
        ...

    def unregister(self, our_key: bytes, their_key: bytes, handle: int) -> bool:
        """Remove ``(our_key, their_key)`` if it still maps to ``handle``; say whether it did."""
        ...

    def lookup(self, our_key: bytes, their_key: bytes) -> int | None:
        """The handle registered at ``(our_key, their_key)`` (no side effect)."""
        ...

    def __len__(self) -> int:
        """Number of waiting registrations."""
        ...

    def items(self) -> Iterator[tuple[RegistryKey, int]]:
        """Every entry (for snapshots and diagnostics; a shared backend may scan)."""
        ...


class InMemoryRegistry:
    """The default :class:`Registry`: one dict, O(1) for every operation.

    Memory per entry: one dict slot plus a 2-tuple that references the key ``bytes`` objects the
    session already holds (no copies).
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[RegistryKey, int] = {}

    def register(self, our_key: bytes, their_key: bytes, handle: int) -> int | None:
        key = (our_key, their_key)
        previous = self._entries.get(key)
        self._entries[key] = handle
        return previous

    def claim(self, our_key: bytes, their_key: bytes) -> int | None:
        return self._entries.pop((their_key, our_key), None)

    def unregister(self, our_key: bytes, their_key: bytes, handle: int) -> bool:
        key = (our_key, their_key)
        if self._entries.get(key) == handle:
            del self._entries[key]
            return True
        return False

    def lookup(self, our_key: bytes, their_key: bytes) -> int | None:
        return self._entries.get((our_key, their_key))

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> Iterator[tuple[RegistryKey, int]]:
        return iter(list(self._entries.items()))
