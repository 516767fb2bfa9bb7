"""The channel model: two real established :class:`~p2psc.core.channel.SecureChannel` ends and
an adversary on the wire between them.

Why a model of its own: the mediation and direct models stop at ``Established``; what happens to
records afterwards (the record layer's lifecycle, :class:`~p2psc.machines.channel.ChannelMachine`)
is this model's subject. Actors: ``Client`` and ``Peer``, each the real ``SecureChannel`` built
from a real Noise KK handshake (fixed keys and ephemerals, so runs are deterministic), and the
``Adversary``. Each side's application sends its script of messages (``Client``: ``c0``,
``c1``, ...; ``Peer``: ``p0``, ...) one record at a time and closes its sending direction (the
authenticated close record, then the transport's FIN) whenever it likes, also before its script
is done; the explorer takes every order. Each direction is a FIFO of wire items: one record per
``seal`` and the FIN. A side whose channel fails closes its transport: the other side gets a FIN
without a close record, and nothing more reaches the failed side.

The adversary has a budget of actions (``--adversary-budget``, 2 by default), each a fault (a
run need not contain any) on one direction that is still open: **drop** the next record,
**duplicate** it, **reorder** the next two, **tamper** with the next record's ciphertext or its
length (over the limit), **truncate** it (half of it, then a FIN: the transport cut inside a
record), **cut** the direction (a forged FIN: everything in flight is lost), **replay** any
record sent earlier in that direction, or **reflect** any record of the other direction.

Properties (``spec/properties.md`` section 3b):

- C1 integrity (*invariant*): each side's application receives a prefix of what the other side
  sent, in order: no dropped, duplicated, reordered, replayed, reflected or altered record ever
  reaches it, and every failure is a typed :class:`~p2psc.errors.ChannelError`;
- C2 authenticated close (*invariant*): an application sees the end of the stream only after
  the other side really closed, and only after everything it sent before its close;
- C3 consistent lifecycles (*invariant*): whenever a side's channel is in ``received_close`` or
  ``both_closed`` the other side's is in ``sent_close`` or ``both_closed`` (a close record is
  only ever taken for the other side's real close), and an application that saw the end is in
  one of those states itself;
- C4 outcomes (*final*): in every final state each direction ended either with everything sent
  and the close delivered, or with a failure of the receiver, and the receiver fails only when
  the adversary touched that direction or the sender failed (and so cut its transport); in a run
  the adversary left alone both sides end ``both_closed`` with every message delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from p2psc.models.explorer import Coverage, Step
from p2psc.models.network import Recording

import p2psc.core.channel as channel_module
from p2psc.core.channel import (
    _CAN_SEND,
    _RECEIVED_CLOSE,
    _SENT_CLOSE,
    EndOfStream,
    SecureChannel,
)
from p2psc.core.peer import prologue
from p2psc.errors import ChannelError
from p2psc.keys import Keypair
from p2psc.machines.channel import ChannelMachine
from p2psc.machines.compiler import compile_machine
from p2psc.noise import CipherState, HandshakeState

__all__ = ["ChannelModel", "build"]

CLIENT, PEER = 0, 1
NAMES = ("Client", "Peer", "Adversary")
FIN = "fin"
"""The wire item of a transport's end of stream (TCP FIN) in one direction."""
PAIRING_ID = bytes(range(16))

ChannelSnapshot = tuple[Any, ...]
"""(machine state, receive buffer, bytes needed, failure class, failure reason, records sent,
records received, send nonce, receive nonce): everything a ``SecureChannel`` holds but its
keys, which are fixed per side."""


class Side(NamedTuple):
    """One end: its channel's snapshot, how many script messages it sealed, whether it sealed
    its close, how many chunks its application received, whether it saw the end of stream."""

    channel: ChannelSnapshot
    sent: int
    closed: bool
    delivered: int
    saw_end: bool


class State(NamedTuple):
    sides: tuple[Side, Side]
    wires: tuple[tuple[bytes | str, ...], tuple[bytes | str, ...]]
    """Items in flight: ``wires[d]`` goes from side ``d`` to side ``1 - d``."""
    ended: tuple[bool, bool]
    """Direction ``d`` has ended at its receiver (FIN handled, or the receiver failed)."""
    history: tuple[tuple[bytes, ...], tuple[bytes, ...]]
    """Every record sealed so far in each direction (what the adversary can replay)."""
    budget: int
    touched: tuple[bool, bool]
    """The adversary acted on direction ``d``."""
    violation: str | None


def _handshake() -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    """(send key, receive key) of the Client and of the Peer after a real Noise KK handshake."""
    client = Keypair.from_private_raw(bytes([0x43]) * 32)
    peer = Keypair.from_private_raw(bytes([0x50]) * 32)
    client_pub, peer_pub = client.public_key.raw, peer.public_key.raw
    bound = prologue(PAIRING_ID, client_pub, peer_pub)
    initiator = HandshakeState.initiator(
        client.to_private_raw(), peer_pub, bound, bytes([0x45]) * 32
    )
    responder = HandshakeState.responder(
        peer.to_private_raw(), client_pub, bound, bytes([0x46]) * 32
    )
    responder.read_message(initiator.write_message(b""))
    initiator.read_message(responder.write_message(b""))
    c_send, c_recv = initiator.split()
    p_send, p_recv = responder.split()
    return (c_send.key, c_recv.key), (p_send.key, p_recv.key)


def snapshot_of(channel: SecureChannel) -> ChannelSnapshot:
    """The hashable picture of ``channel`` (its keys left out: they are fixed per side)."""
    failed = channel.failed
    return (
        channel._state,
        bytes(channel._buf),
        channel._need,
        None if failed is None else type(failed),
        None if failed is None else failed.reason,
        channel._records_sent,
        channel._records_received,
        channel._send.n,
        channel._recv.n,
    )


class ChannelModel:
    """See the module docstring; mutants swap in a broken ``channel_class``."""

    def __init__(
        self,
        *,
        budget: int = 2,
        messages: tuple[int, int] = (2, 1),
        channel_class: type[SecureChannel] = SecureChannel,
        name: str = "channel",
    ) -> None:
        self.budget = budget
        self.messages = messages
        self.channel_class = channel_class
        self.name = f"{name} (adversary budget {budget}, messages {messages[0]}+{messages[1]})"
        self.actors: Sequence[str] = NAMES
        self.scripts = tuple(
            tuple(f"{'cp'[side]}{i}".encode() for i in range(messages[side])) for side in (0, 1)
        )
        self.keys = _handshake()
        table = compile_machine(ChannelMachine)
        self._coverage = Coverage([table])
        self._recording = Recording(((channel_module, "CHANNEL_TABLE"),), self._coverage)
        self._memo: dict[tuple[int, ChannelSnapshot, str, Any], tuple[ChannelSnapshot, Any]] = {}

    # --- the real channel, rebuilt from a snapshot ---------------------------------------

    def _restore(self, side: int, snap: ChannelSnapshot) -> SecureChannel:
        state, buf, need, failure, reason, sent, received, send_n, recv_n = snap
        send_key, recv_key = self.keys[side]
        channel = self.channel_class(CipherState(send_key, send_n), CipherState(recv_key, recv_n))
        channel._state = state
        channel._buf = bytearray(buf)
        channel._need = need
        channel._failed = None if failure is None else failure(reason)
        channel._records_sent = sent
        channel._records_received = received
        return channel

    def _call(self, side: int, snap: ChannelSnapshot, op: str, data: Any) -> tuple[Any, Any]:
        """(snapshot after, result) of one channel operation (memoised: the channel is
        deterministic). The result is the returned value, or the exception raised."""
        key = (side, snap, op, data)
        hit = self._memo.get(key)
        if hit is None:
            with self._recording:
                channel = self._restore(side, snap)
                result: Any
                try:
                    if op == "seal":
                        result = channel.seal(data)
                    elif op == "seal_close":
                        result = channel.seal_close()
                    elif op == "feed":
                        result = tuple(channel.feed(data))
                    else:
                        channel.transport_eof()
                        result = None
                except Exception as exc:  # a typed error is an outcome; C1 judges the type
                    result = exc
            hit = self._memo[key] = (snapshot_of(channel), result)
        return hit

    # --- explorer interface --------------------------------------------------------------

    def initial_states(self) -> list[State]:
        sides = []
        for side in (CLIENT, PEER):
            send_key, recv_key = self.keys[side]
            fresh = self.channel_class(CipherState(send_key), CipherState(recv_key))
            sides.append(Side(snapshot_of(fresh), 0, False, 0, False))
        return [
            State(
                sides=(sides[0], sides[1]),
                wires=((), ()),
                ended=(False, False),
                history=((), ()),
                budget=self.budget,
                touched=(False, False),
                violation=None,
            )
        ]

    def coverage(self) -> Coverage:
        return self._coverage

    def describe(self, state: State) -> str:
        parts = []
        for side in (CLIENT, PEER):
            s = state.sides[side]
            parts.append(
                f"{NAMES[side]}: {s.channel[0]}, sent {s.sent}{' +close' if s.closed else ''}, "
                f"received {s.delivered}{' +end' if s.saw_end else ''}"
            )
        return "; ".join(parts) + f"; adversary budget {state.budget}"

    def invariant(self, state: State) -> str | None:
        if state.violation is not None:
            return state.violation
        for side in (CLIENT, PEER):
            mine, theirs = state.sides[side], state.sides[1 - side]
            if mine.channel[0] in _RECEIVED_CLOSE and not theirs.closed:
                return (
                    f"C3: {NAMES[side]}'s channel is in {mine.channel[0]} but "
                    f"{NAMES[1 - side]} never closed (it is in {theirs.channel[0]})"
                )
            if (
                theirs.closed
                and theirs.channel[0] not in _SENT_CLOSE
                and theirs.channel[0] != "failed"
            ):
                return (
                    f"C3: {NAMES[1 - side]} sealed its close but its channel is in "
                    f"{theirs.channel[0]}"
                )
            if mine.saw_end and mine.channel[0] not in _RECEIVED_CLOSE | {"failed"}:
                return (
                    f"C3: {NAMES[side]}'s application saw the end of stream but its channel "
                    f"is in {mine.channel[0]}"
                )
        return None

    def terminal(self, state: State) -> str | None:
        failed = [state.sides[side].channel[0] == "failed" for side in (CLIENT, PEER)]
        if not any(state.touched) and any(failed):
            who = " and ".join(NAMES[side] for side in (CLIENT, PEER) if failed[side])
            return f"C4: the adversary did nothing, yet the channel failed at {who}"
        for receiver in (CLIENT, PEER):
            sender = 1 - receiver
            mine, theirs = state.sides[receiver], state.sides[sender]
            if failed[receiver]:
                if not (state.touched[sender] or failed[sender]):
                    return (
                        f"C4: {NAMES[receiver]} failed although nobody touched what "
                        f"{NAMES[sender]} sent and {NAMES[sender]} did not fail"
                    )
                continue
            if not (mine.saw_end and mine.delivered == theirs.sent and theirs.closed):
                return (
                    f"C4: {NAMES[receiver]} neither failed nor received everything "
                    f"{NAMES[sender]} sent ({mine.delivered} of {theirs.sent} messages, "
                    f"end {'seen' if mine.saw_end else 'not seen'})"
                )
        return None

    def successors(self, state: State) -> list[tuple[Step, State]]:
        out: list[tuple[Step, State]] = []
        for direction in (CLIENT, PEER):
            wire = state.wires[direction]
            if wire:
                out.append(self._deliver(state, direction))
        for side in (CLIENT, PEER):
            out += self._app_steps(state, side)
        if state.budget > 0:
            for direction in (CLIENT, PEER):
                out += self._adversary(state, direction)
        return out

    # --- steps ---------------------------------------------------------------------------

    def _app_steps(self, state: State, side: int) -> list[tuple[Step, State]]:
        mine = state.sides[side]
        if mine.channel[0] not in _CAN_SEND:
            return []
        out = []
        script = self.scripts[side]
        if mine.sent < len(script):
            message = script[mine.sent]
            snap, record = self._call(side, mine.channel, "seal", message)
            changed = mine._replace(channel=snap, sent=mine.sent + 1)
            out.append(
                (
                    Step("app", NAMES[side], f"sends {message.decode()}"),
                    self._emit(state, side, changed, (record,)),
                )
            )
        snap, record = self._call(side, mine.channel, "seal_close", None)
        changed = mine._replace(channel=snap, closed=True)
        out.append(
            (
                Step("app", NAMES[side], "closes (close record, then FIN)"),
                self._emit(state, side, changed, (record, FIN)),
            )
        )
        return out

    def _emit(
        self, state: State, side: int, changed: Side, items: tuple[bytes | str, ...]
    ) -> State:
        """``side`` moved to ``changed`` and wrote ``items`` (lost once the direction ended:
        the other side failed and closed the connection)."""
        sides = _put(state.sides, side, changed)
        items = tuple(item for item in items if item)  # writing no bytes sends nothing
        records = tuple(item for item in items if isinstance(item, bytes))
        history = _put(state.history, side, state.history[side] + records)
        wires = state.wires
        if not state.ended[side]:
            wires = _put(wires, side, wires[side] + items)
        return state._replace(sides=sides, wires=wires, history=history)

    def _deliver(self, state: State, direction: int) -> tuple[Step, State]:
        receiver, sender = 1 - direction, direction
        item, rest = state.wires[direction][0], state.wires[direction][1:]
        state = state._replace(wires=_put(state.wires, direction, rest))
        mine = state.sides[receiver]
        if item == FIN:
            step = Step("deliver", NAMES[receiver], "FIN", NAMES[sender])
            snap, result = self._call(receiver, mine.channel, "eof", None)
            state = state._replace(ended=_put(state.ended, direction, True))
            mine = mine._replace(channel=snap)
            if not isinstance(result, BaseException):
                # transport_eof returned: the application reads a clean end of stream.
                if not mine.saw_end:
                    state = self._judge_end(state, receiver)
                    mine = mine._replace(saw_end=True)
                return step, state._replace(sides=_put(state.sides, receiver, mine))
            return step, self._failed(state, receiver, mine, result)
        assert isinstance(item, bytes)
        step = Step("deliver", NAMES[receiver], _label(item), NAMES[sender])
        snap, result = self._call(receiver, mine.channel, "feed", item)
        mine = mine._replace(channel=snap)
        if isinstance(result, BaseException):
            return step, self._failed(state, receiver, mine, result)
        script = self.scripts[sender]
        for chunk in result:
            if isinstance(chunk, EndOfStream):
                state = self._judge_end(state, receiver, mine.delivered)
                mine = mine._replace(saw_end=True)
                continue
            expected = script[mine.delivered] if mine.delivered < len(script) else None
            if chunk != expected and state.violation is None:
                state = state._replace(
                    violation=f"C1: {NAMES[receiver]}'s application received {chunk!r}, "
                    f"but the next message {NAMES[sender]} sent is "
                    f"{'none' if expected is None else repr(expected)}"
                )
            mine = mine._replace(delivered=mine.delivered + 1)
        return step, state._replace(sides=_put(state.sides, receiver, mine))

    def _judge_end(self, state: State, receiver: int, delivered: int | None = None) -> State:
        """C2: the application of ``receiver`` is about to see the end of stream."""
        sender = state.sides[1 - receiver]
        if delivered is None:
            delivered = state.sides[receiver].delivered
        if state.violation is None and not (sender.closed and delivered == sender.sent):
            reason = (
                "never closed"
                if not sender.closed
                else f"sent {sender.sent} messages, of which {delivered} arrived"
            )
            return state._replace(
                violation=f"C2: {NAMES[receiver]}'s application saw the end of stream, but "
                f"{NAMES[1 - receiver]} {reason}"
            )
        return state

    def _failed(self, state: State, side: int, mine: Side, error: BaseException) -> State:
        """``side``'s channel raised ``error``: it closes the connection (a FIN without a close
        record towards the other side, if its direction was still open) and reads nothing more."""
        if not isinstance(error, ChannelError) and state.violation is None:
            state = state._replace(
                violation=f"C1: {NAMES[side]}'s channel raised {error!r}, not a ChannelError"
            )
        wires = _put(state.wires, 1 - side, ())  # nothing more reaches the failed side
        ended = _put(state.ended, 1 - side, True)
        if not mine.closed and not state.ended[side]:
            wires = _put(wires, side, wires[side] + (FIN,))
        return state._replace(sides=_put(state.sides, side, mine), wires=wires, ended=ended)

    def _adversary(self, state: State, direction: int) -> list[tuple[Step, State]]:
        if state.ended[direction]:
            return []
        wire = state.wires[direction]
        receiver = NAMES[1 - direction]
        moves: list[tuple[str, tuple[bytes | str, ...]]] = []
        head = wire[0] if wire else None
        if isinstance(head, bytes):
            rest = wire[1:]
            tampered = head[:-1] + bytes([head[-1] ^ 1])
            moves += [
                ("drops the next record", rest),
                ("duplicates the next record", (head, *wire)),
                ("tampers with the next record", (tampered, *rest)),
                ("sets the next record's length over the limit", (b"\xff\xff" + head[2:], *rest)),
                ("truncates the next record and cuts the transport", (head[: len(head) // 2], FIN)),
            ]
            if len(wire) > 1 and isinstance(wire[1], bytes):
                moves.append(("swaps the next two records", (wire[1], head, *wire[2:])))
        if wire != (FIN,):
            moves.append(("cuts the transport (forged FIN)", (FIN,)))
        for index, record in enumerate(state.history[direction]):
            moves.append((f"replays record {index}", (record, *wire)))
        for index, record in enumerate(state.history[1 - direction]):
            moves.append((f"reflects record {index} of the other direction", (record, *wire)))
        out = []
        budget = state.budget - 1
        touched = _put(state.touched, direction, True)
        for text, changed in moves:
            nxt = state._replace(
                wires=_put(state.wires, direction, changed), budget=budget, touched=touched
            )
            out.append((Step("inject", receiver, text, "Adversary", fault=True), nxt))
        return out


def _put(values: tuple[Any, Any], index: int, value: Any) -> Any:
    return (value, values[1]) if index == 0 else (values[0], value)


def _label(record: bytes) -> str:
    return f"record ({len(record)} bytes)"


def build(*, budget: int = 2, mutant: str | None = None) -> ChannelModel:
    """Entry point of ``p2psc explore channel``."""
    if mutant is not None:
        from p2psc.models.mutants import channel_mutant

        return channel_mutant(mutant, budget=budget)
    return ChannelModel(budget=budget)
