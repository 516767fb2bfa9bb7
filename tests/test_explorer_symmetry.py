"""Symmetry reduction (issue 16): one state per class of interchangeable actors.

The negotiator pair model declares its one symmetry (the two sides swapped). Reduced and
unreduced explorations must agree on every property: the same verdict, the same property broken
by every mutant at the same (shortest) depth, and the reduced run must visit exactly one
representative of every state the unreduced run reaches.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

import pytest
from p2psc.models.explorer import Coverage, Step, explore
from p2psc.models.mediation_model import MediationModel, peer_address
from p2psc.models.mutants import NEGOTIATOR_MUTANTS, negotiator_mutant
from p2psc.models.negotiator_model import NegotiatorPairModel
from p2psc.models.symbolic_crypto import fixed_nonces

from p2psc import wire
from p2psc.cli import main
from p2psc.errors import P2pscError

SMALL = [
    {"protocols": 1, "rounds": 2},
    {"protocols": 2, "rounds": 2},
    {"protocols": 2, "rounds": 2, "faults": True},
    {"protocols": 2, "rounds": 2, "mixed_sets": True},
]


def _reachable(model: NegotiatorPairModel) -> set[Hashable]:
    seen: set[Hashable] = set(model.initial_states())
    frontier = list(seen)
    while frontier:
        state = frontier.pop()
        for _, target in model.successors(state):  # type: ignore[arg-type]
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


@pytest.mark.parametrize("options", SMALL)
def test_reduced_and_unreduced_runs_agree(options: dict[str, int | bool]) -> None:
    full = explore(NegotiatorPairModel(**options))  # type: ignore[arg-type]
    reduced = explore(NegotiatorPairModel(**options), symmetry=True)  # type: ignore[arg-type]
    assert full.ok and reduced.ok
    assert full.depth == reduced.depth
    assert reduced.states < full.states <= 2 * reduced.states
    assert any("symmetry" in note for note in reduced.notes)
    # Exactly one representative per reachable state: the canonical images of everything the
    # full run reaches are the states the reduced run stores.
    model = NegotiatorPairModel(**options)  # type: ignore[arg-type]
    states = _reachable(model)
    representatives = {model.canonical(s) for s in states}  # type: ignore[arg-type]
    assert len(representatives) == reduced.states
    assert len(states) == full.states
    for state in list(states)[:2000]:  # the mirror image is reachable and has the same verdicts
        sa, sb, ca, cb, book = state  # type: ignore[misc]
        mirror = (sb, sa, cb, ca, model._mirror(book))
        assert mirror in states
        assert model.invariant(mirror) == model.invariant(state)  # type: ignore[arg-type]
        assert (model.terminal(mirror) is None) == (model.terminal(state) is None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(NEGOTIATOR_MUTANTS))
@pytest.mark.parametrize("faults", [False, True])
def test_every_mutant_breaks_the_same_property_at_the_same_depth(name: str, faults: bool) -> None:
    def build() -> NegotiatorPairModel:
        return negotiator_mutant(name, protocols=2, rounds=2, faults=faults, mixed_sets=False)

    full, reduced = explore(build()), explore(build(), symmetry=True)
    assert full.violation is not None and reduced.violation is not None
    assert full.violation.kind == reduced.violation.kind
    assert full.violation.message.split(":")[0] == reduced.violation.message.split(":")[0]
    assert len(full.violation.steps) == len(reduced.violation.steps)


class _Mirror:
    """Toy: two counters that each may go up to 2; swapping them is a symmetry."""

    name = "mirror"
    actors: Sequence[str] = ("X", "Y")

    def initial_states(self) -> list[tuple[int, int]]:
        return [(0, 0)]

    def successors(self, state: tuple[int, int]) -> list[tuple[Step, tuple[int, int]]]:
        x, y = state
        out = []
        if x < 2:
            out.append((Step("app", "X", "up"), (x + 1, y)))
        if y < 2:
            out.append((Step("app", "Y", "up"), (x, y + 1)))
        return out

    def canonical(self, state: tuple[int, int]) -> tuple[int, int]:
        return min(state, state[::-1])

    def invariant(self, state: tuple[int, int]) -> str | None:
        return None

    def terminal(self, state: tuple[int, int]) -> str | None:
        return None

    def describe(self, state: tuple[int, int]) -> str:
        return repr(state)

    def coverage(self) -> Coverage | None:
        return None


def test_the_engine_stores_one_state_per_class() -> None:
    assert explore(_Mirror()).states == 9
    reduced = explore(_Mirror(), symmetry=True)
    assert reduced.states == 6  # (0,0) (0,1) (0,2) (1,1) (1,2) (2,2)
    assert reduced.depth == 4 and reduced.terminals == 1


def test_cli_symmetry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "negotiator", "--protocols", "2", "--symmetry", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "symmetry reduction" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["explore", "mediation", "--symmetry", "--quiet"])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_four_protocols_within_ci_time_with_symmetry() -> None:
    model = NegotiatorPairModel(protocols=4, rounds=3)
    result = explore(model, symmetry=True)
    assert result.ok
    assert result.states > 1_000_000


# --- the mediation model: why it declares no symmetry -------------------------------------


def _mediation_reachable(model: MediationModel) -> set[Hashable]:
    seen: set[Hashable] = set(model.initial_states())
    frontier = list(seen)
    while frontier:
        state = frontier.pop()
        for _, target in model.successors(state):
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


def test_mediation_key_renaming_is_semantic_but_not_exact() -> None:
    """spec/properties.md section 1: A and B (who want each other) are interchangeable in
    meaning, but no renaming of keys, addresses and nonces maps the states of one registration
    order onto those of the other, so a reduction by renaming would merge states it cannot
    prove equivalent.

    1. The mirror image is there: as many reached states have only A started as only B.
    2. Every message made of names alone renames exactly onto its mirror image (Advertise,
       AdvertiseResponse, PeerDisconnect, PeerIdentification).
    3. Every value derived from the keys does not: the challenge (the symbolic seal's digest
       covers both keys in order), and the real Noise messages and records (X25519, HKDF,
       ChaCha20-Poly1305 of the keys and of per-peer ephemerals): renaming their inputs changes
       the outputs unpredictably, not by the renaming.
    """
    model = MediationModel(peers=2)
    states = _mediation_reachable(model)
    started = Counter(model.unpack(s).extra.started for s in states)  # type: ignore[arg-type]
    assert started[(True, True, False)] == started[(True, False, True)] > 0
    sent: dict[tuple[int, int, str], set[bytes]] = defaultdict(set)
    for packed in states:
        for link in model.unpack(packed).links:  # type: ignore[arg-type]
            for src, dst, items in ((link.x, link.y, link.to_y), (link.y, link.x, link.to_x)):
                for item in items:
                    if isinstance(item, bytes):
                        sent[(src, dst, _kind(item))].add(item)
    swap = {1: 2, 2: 1, 0: 0}
    names = _Renaming(model)
    plain = ("Advertise", "AdvertiseResponse", "PeerDisconnect", "PeerIdentification")
    derived = ("AdvertiseChallenge", "HandshakeInit", "HandshakeResponse", "record")
    checked = set()
    for (src, dst, kind), items in sent.items():
        if kind not in plain + derived or not {src, dst} & {1, 2}:
            continue
        (mine,) = items  # one of each per direction: fixed nonces and ephemerals
        (mirror,) = sent[(swap[src], swap[dst], kind)]
        if kind in plain:
            assert names.message(mine) == mirror, kind
        else:
            assert names.opaque(mine) != mirror, kind
            assert mine != mirror, kind
        checked.add(kind)
    assert checked == set(plain + derived)


def _kind(data: bytes) -> str:
    try:
        return type(wire.decode(data)).__name__
    except P2pscError:
        return "record"  # the Client's key confirmation: a channel record


class _Renaming:
    """Swaps A's and B's names: keys, addresses and nonces (the model's fixed per-peer ones)."""

    def __init__(self, model: MediationModel) -> None:
        a, b = model.keys[1], model.keys[2]
        self.keys = {a: b, b: a}
        na, nb = fixed_nonces(b"A")(32), fixed_nonces(b"B")(32)
        self.nonces = {na: nb, nb: na}
        pa, pb = peer_address(1), peer_address(2)
        self.addresses = {
            wire.Address(*pa): wire.Address(*pb),
            wire.Address(*pb): wire.Address(*pa),
        }

    def message(self, data: bytes) -> bytes:
        """A message renamed field by field (the exact renaming of a message made of names)."""
        message = wire.decode(data)
        changes = {}
        for field in dataclasses.fields(message):  # type: ignore[arg-type]
            value = getattr(message, field.name)
            renamed = self.keys.get(value, self.nonces.get(value, value))
            changes[field.name] = self.addresses.get(value, renamed)
        return dataclasses.replace(message, **changes).encode()  # type: ignore[type-var]

    def opaque(self, data: bytes) -> bytes:
        """Every occurrence of a key or nonce swapped (all a renaming can do to derived bytes)."""
        for table in (self.keys, self.nonces):
            first, second = list(table)
            marker = b"\x00renaming\x00"
            data = data.replace(first, marker).replace(second, first).replace(marker, second)
        return data
