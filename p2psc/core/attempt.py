"""What the two peer cores share beyond the I/O vocabulary (sans-IO): how an attempt fails.

Why: the version 1 :class:`p2psc.core.peer.PeerCore` and the version 0
:class:`p2psc.legacy.peer.LegacyPeerCore` speak different protocols, but they end a failed
attempt the same way: the machine takes the failing event where it declares one (``malformed``,
``timeout``, ``lost``) and otherwise goes to ``failed``; and both keep the typed error in their
snapshots, which must rebuild the same exception class. Written once here.
"""

from __future__ import annotations

from p2psc import errors
from p2psc.errors import P2pscError
from p2psc.machines.compiler import MachineTable

__all__ = ["failed_state", "restore_error"]


def failed_state(table: MachineTable, state: str, event: str) -> str:
    """The state a core enters when it fails in ``state`` with ``event``: the target ``table``
    declares for it (failure events carry no guards), else ``failed``."""
    if table.allows(state, event):
        return table.step(state, event).target
    return "failed"


def restore_error(name: str, reason: str, code: int | None = None) -> P2pscError:
    """The error a snapshot names: an instance of the :mod:`p2psc.errors` class ``name`` (or
    :class:`P2pscError` for an unknown name) with ``reason`` and ``code``, built without
    calling a subclass's own ``__init__``."""
    kind: type[P2pscError] = getattr(errors, name, P2pscError)
    error = kind.__new__(kind)
    P2pscError.__init__(error, reason, code=code)
    return error
