"""The test vectors of spec/protocol.md (tests/vectors/frames.json) against our codec and crypto.

The JSON file is the machine-readable copy of the spec's vectors; this test checks the encoder
and decoder (fast and construct paths), the sealed-nonce construction, the invalid frames, and
that the spec shows the same hex as the file.
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from p2psc import errors, wire
from p2psc.keys import Keypair, nonce_info, open_nonce
from p2psc.wire import Address, FrameDecoder, Message, construct_decode, decode, encode

ROOT = Path(__file__).resolve().parents[1]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "frames.json").read_text(encoding="utf-8"))
SPEC = (ROOT / "spec" / "protocol.md").read_text(encoding="utf-8")
KEYS = {
    name: Keypair.from_private_raw(bytes.fromhex(k["private"]))
    for name, k in VECTORS["keys"].items()
}
ADDRESS_FIELDS = {"local", "peer", "client", "client_local", "peer_local"}
TEXT_FIELDS = {"text"}
INT_FIELDS = {"version", "code", "token", "interval_ms", "status"}


def build(vector: dict[str, Any]) -> Message:
    cls = getattr(wire, vector["message"])
    kwargs: dict[str, Any] = {}
    for name, value in vector["fields"].items():
        if value is None:
            kwargs[name] = None
        elif name == "extensions":
            kwargs[name] = tuple((kind, bytes.fromhex(item)) for kind, item in value)
        elif name in ADDRESS_FIELDS:
            kwargs[name] = Address.parse(value)
        elif name in INT_FIELDS or name in TEXT_FIELDS:
            kwargs[name] = value
        else:
            kwargs[name] = bytes.fromhex(value)
    msg: Message = cls(**kwargs)
    return msg


def load_generator() -> Any:
    """tests/vectors/make_frames.py (a script, not a package module)."""
    path = ROOT / "tests" / "vectors" / "make_frames.py"
    spec = importlib.util.spec_from_file_location("make_frames", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_message_type_has_a_vector() -> None:
    assert {v["type"] for v in VECTORS["frames"]} == {int(t) for t in wire.MessageType}


def test_fixed_keys() -> None:
    for name, k in VECTORS["keys"].items():
        assert KEYS[name].public_key.hex() == k["public"]


@pytest.mark.parametrize("vector", VECTORS["frames"], ids=lambda v: v["name"])
def test_frame_vector(vector: dict[str, Any]) -> None:
    msg = build(vector)
    frame = bytes.fromhex(vector["hex"])
    assert int(msg.TYPE) == vector["type"] == frame[3]
    assert encode(msg) == frame
    assert decode(frame) == msg
    assert construct_decode(frame) == msg
    assert wire.construct_encode(msg) == frame
    assert FrameDecoder().feed(frame) == [msg]


def test_stream_of_all_vectors() -> None:
    stream = b"".join(bytes.fromhex(v["hex"]) for v in VECTORS["frames"])
    expected = [build(v) for v in VECTORS["frames"]]
    dec = FrameDecoder()
    got: list[Message] = []
    for i in range(0, len(stream), 13):
        got += dec.feed(stream[i : i + 13])
    assert got == expected and not dec.has_partial


@pytest.mark.parametrize("vector", VECTORS["sealed_nonces"], ids=lambda v: v["message"])
def test_sealed_nonce_vector(vector: dict[str, Any]) -> None:
    recipient, other = KEYS[vector["recipient"]], KEYS[vector["other"]]
    info = nonce_info(vector["message"], recipient.public_key.raw, other.public_key.raw)
    assert info.hex() == vector["info"]
    sealed = bytes.fromhex(vector["sealed"])
    assert open_nonce(recipient, sealed, info).hex() == vector["nonce"]
    with pytest.raises(errors.CryptoError):
        open_nonce(other, sealed, info)
    # The frame vector of the same message carries exactly these sealed bytes.
    carriers = [v for v in VECTORS["frames"] if v["message"] == vector["message"]]
    assert carriers and all(v["fields"]["encrypted_nonce"] == vector["sealed"] for v in carriers)


@pytest.mark.parametrize("vector", VECTORS["invalid_frames"], ids=lambda v: v["name"])
def test_invalid_frame_vector(vector: dict[str, Any]) -> None:
    frame = bytes.fromhex(vector["hex"])
    error = getattr(errors, vector["error"])
    with pytest.raises(error) as caught:
        decode(frame)
    assert vector["reason_contains"] in caught.value.reason
    dec = FrameDecoder()
    if vector["name"] == "truncated payload":
        # A stream decoder waits for the rest of a cut frame; EOF now is a broken connection.
        assert dec.feed(frame) == [] and dec.has_partial
    else:
        with pytest.raises(error):
            dec.feed(frame)
    with pytest.raises(errors.ProtocolError):
        construct_decode(frame)


def test_spec_section_9_matches_the_vector_file() -> None:
    generator = load_generator()
    rendered = generator.render_section(VECTORS)
    _, section, _ = generator.split_spec(SPEC)
    assert section.rstrip("\n") == rendered.rstrip("\n"), (
        "spec/protocol.md section 9 differs from tests/vectors/frames.json; "
        "run: .venv/bin/python tests/vectors/make_frames.py --update-spec"
    )
    for vector in VECTORS["frames"]:
        assert "\n".join(textwrap.wrap(vector["hex"], 64)) in SPEC


def test_direct_handshake_vector() -> None:
    """The fixed Noise KK handshake of section 9, recomputed from its inputs: prologue (pairing
    id, both keys), both messages, the handshake hash and the session secret."""
    from p2psc.core.peer import prologue, session_secret
    from p2psc.noise import HandshakeState

    hs = VECTORS["direct_handshake"]
    keys = VECTORS["keys"]
    alice, bob = (bytes.fromhex(keys[n]["public"]) for n in ("alice", "bob"))
    pid = bytes.fromhex(hs["pairing_id"])
    assert prologue(pid, alice, bob).hex() == hs["prologue"]
    init = HandshakeState.initiator(
        bytes.fromhex(keys["alice"]["private"]),
        bob,
        bytes.fromhex(hs["prologue"]),
        bytes.fromhex(hs["client_ephemeral_private"]),
    )
    resp = HandshakeState.responder(
        bytes.fromhex(keys["bob"]["private"]),
        alice,
        bytes.fromhex(hs["prologue"]),
        bytes.fromhex(hs["peer_ephemeral_private"]),
    )
    first = init.write_message(b"")
    assert first.hex() == hs["handshake_init"]
    assert resp.read_message(first) == b""
    second = resp.write_message(b"")
    assert second.hex() == hs["handshake_response"]
    assert init.read_message(second) == b""
    assert init.handshake_hash.hex() == resp.handshake_hash.hex() == hs["handshake_hash"]
    assert session_secret(init.handshake_hash).hex() == hs["session_secret"]
