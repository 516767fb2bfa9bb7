"""p2psc.noise against the published Noise test vectors (cacophony and snow).

Every entry of ``tests/vectors/noise/*.json`` runs: both sides are built from the entry's keys
and prologue, every handshake message is written by its sender and compared byte for byte, then
read by the receiver and its payload compared; after the handshake, transport messages go the
same way through the split cipher states (alternating directions, or all from the initiator for
one-way patterns, as the vector generators do); the handshake hash is compared where given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from p2psc.noise import PROTOCOL_NAME, CipherState, HandshakeState, protocol_name

VECTOR_DIR = Path(__file__).parent / "vectors" / "noise"


def _load() -> list[tuple[str, dict[str, Any]]]:
    entries = []
    for path in sorted(VECTOR_DIR.glob("*.json")):
        for vector in json.loads(path.read_text())["vectors"]:
            entries.append((f"{path.stem}:{vector['protocol_name']}", vector))
    return entries


VECTORS = _load()


def _opt(vector: dict[str, Any], key: str) -> bytes | None:
    value = vector.get(key)
    return None if value is None else bytes.fromhex(value)


def _side(vector: dict[str, Any], initiator: bool) -> HandshakeState:
    p = "init_" if initiator else "resp_"
    name = vector["protocol_name"]
    pattern = name.split("_")[1]
    assert protocol_name(pattern).decode() == name
    return HandshakeState.for_pattern(
        pattern,
        initiator=initiator,
        prologue=bytes.fromhex(vector[p + "prologue"]),
        static_private=_opt(vector, p + "static"),
        ephemeral_private=_opt(vector, p + "ephemeral"),
        remote_static=_opt(vector, p + "remote_static"),
    )


def test_the_vector_files_cover_kk_from_both_sources() -> None:
    names = [key for key, _ in VECTORS]
    assert f"cacophony:{PROTOCOL_NAME.decode()}" in names
    assert f"snow:{PROTOCOL_NAME.decode()}" in names
    # Every fundamental pattern the module implements, from both sources.
    assert len(VECTORS) == 30


@pytest.mark.parametrize(("key", "vector"), VECTORS, ids=[k for k, _ in VECTORS])
def test_vector(key: str, vector: dict[str, Any]) -> None:
    init, resp = _side(vector, True), _side(vector, False)
    one_way = len(vector["protocol_name"].split("_")[1]) == 1
    messages = vector["messages"]
    transport: tuple[tuple[CipherState, CipherState], tuple[CipherState, CipherState]] | None
    transport = None
    handshake_messages = 0
    for i, message in enumerate(messages):
        payload = bytes.fromhex(message["payload"])
        expected = bytes.fromhex(message["ciphertext"])
        if transport is None:
            sender, receiver = (init, resp) if i % 2 == 0 else (resp, init)
            assert sender.our_turn and not receiver.our_turn
            assert sender.write_message(payload) == expected, f"message {i}"
            assert receiver.read_message(expected) == payload, f"message {i}"
            handshake_messages += 1
            if init.complete:
                assert resp.complete
                assert init.handshake_hash == resp.handshake_hash
                if "handshake_hash" in vector:
                    assert init.handshake_hash.hex() == vector["handshake_hash"]
                transport = (init.split(), resp.split())
            continue
        (i_send, i_recv), (r_send, r_recv) = transport
        from_initiator = one_way or i % 2 == 0
        send, recv = (i_send, r_recv) if from_initiator else (r_send, i_recv)
        assert send.encrypt_with_ad(b"", payload) == expected, f"message {i}"
        assert recv.decrypt_with_ad(b"", expected) == payload, f"message {i}"
    assert transport is not None, "the vector never completed its handshake"
    assert handshake_messages < len(messages), "the vector has no transport messages"
