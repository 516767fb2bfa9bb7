"""Declarative control flow: one python-statemachine class per protocol role.

These classes are the single source of truth. Cores run them through tables compiled by
:mod:`p2psc.machines.compiler`; ``p2psc diagrams`` renders them into ``spec/diagrams/``.
Add a new machine by appending ``"module:ClassName"`` to :data:`MACHINES`.
"""

from __future__ import annotations

import importlib

__all__ = ["MACHINES", "machine_classes"]

MACHINES: tuple[str, ...] = (
    "p2psc.machines.negotiator:NegotiatorMachine",
    "p2psc.legacy.machines:LegacyPeerMachine",
    "p2psc.machines.mediator:MediatorSession",
    "p2psc.machines.handshake:Registration",
    "p2psc.machines.handshake:Rendezvous",
    "p2psc.machines.handshake:ClientCandidate",
    "p2psc.machines.handshake:PeerCandidate",
    "p2psc.machines.channel:ChannelMachine",
    "p2psc.machines.relay:RelaySession",
    "p2psc.machines.relay:RelayLeg",
)
"""Every machine class of the project, as ``module:ClassName``; the diagrams are made of these."""


def machine_classes() -> dict[str, type]:
    """Import and return every registered machine class, keyed by class name."""
    classes: dict[str, type] = {}
    for ref in MACHINES:
        module_name, _, class_name = ref.partition(":")
        classes[class_name] = getattr(importlib.import_module(module_name), class_name)
    return classes
