"""The relay test vectors of spec/relay.md section 9 (tests/vectors/relay_frames.json) against
our relay codec and crypto: every frame encodes and decodes (whole and streamed), the sealed
RelayChallenge opens only for its recipient and only under the relay's info, the relayed
handshake recomputes from its inputs (and differs from the direct one), every invalid frame is
rejected with the error it names, and the spec shows exactly what the file holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_vectors import load_generator

from p2psc import errors, relay_wire, wire
from p2psc.keys import Keypair, nonce_info, open_nonce
from p2psc.relay_wire import END_MARKER, challenge_info, decode_relay, take_relay_frame

ROOT = Path(__file__).resolve().parents[1]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "relay_frames.json").read_text(encoding="utf-8"))
DIRECT = json.loads((ROOT / "tests" / "vectors" / "frames.json").read_text(encoding="utf-8"))
SPEC = (ROOT / "spec" / "relay.md").read_text(encoding="utf-8")
KEYS = {
    name: Keypair.from_private_raw(bytes.fromhex(k["private"]))
    for name, k in VECTORS["keys"].items()
}


def build(vector: dict[str, Any]) -> relay_wire.RelayMessage:
    cls = getattr(relay_wire, vector["message"])
    kwargs = {
        name: bytes.fromhex(value) if isinstance(value, str) and name != "text" else value
        for name, value in vector["fields"].items()
    }
    message: relay_wire.RelayMessage = cls(**kwargs)
    return message


def test_every_relay_message_type_has_a_vector() -> None:
    assert {v["type"] for v in VECTORS["frames"]} == set(relay_wire.RELAY_TYPES)


def test_the_keys_are_those_of_the_protocol_vectors() -> None:
    assert VECTORS["keys"] == DIRECT["keys"]
    for name, k in VECTORS["keys"].items():
        assert KEYS[name].public_key.hex() == k["public"]


@pytest.mark.parametrize("vector", VECTORS["frames"], ids=lambda v: v["name"])
def test_relay_frame_vector(vector: dict[str, Any]) -> None:
    message = build(vector)
    frame = bytes.fromhex(vector["hex"])
    assert int(message.TYPE) == vector["type"] == frame[3]
    assert message.encode() == frame
    assert decode_relay(frame) == message
    assert take_relay_frame(frame + b"P2") == (message, b"P2")
    assert take_relay_frame(frame[:-1]) is None  # incomplete: wait for the rest


def test_a_stream_of_every_relay_vector_in_small_pieces() -> None:
    stream = b"".join(bytes.fromhex(v["hex"]) for v in VECTORS["frames"])
    expected = [build(v) for v in VECTORS["frames"]]
    got: list[object] = []
    buf = b""
    for i in range(0, len(stream), 7):
        buf += stream[i : i + 7]
        while (taken := take_relay_frame(buf)) is not None:
            message, buf = taken
            got.append(message)
    assert got == expected and buf == b""


def test_sealed_relay_challenge_vector() -> None:
    (vector,) = VECTORS["sealed_nonces"]
    alice, bob = KEYS[vector["recipient"]], KEYS[vector["other"]]
    pairing = bytes.fromhex(vector["pairing_id"])
    info = challenge_info(alice.public_key.raw, bob.public_key.raw, pairing)
    assert info.hex() == vector["info"]
    sealed = bytes.fromhex(vector["sealed"])
    assert open_nonce(alice, sealed, info).hex() == vector["nonce"]
    with pytest.raises(errors.CryptoError):
        open_nonce(bob, sealed, info)  # only the recipient opens it
    mediator_info = nonce_info("AdvertiseChallenge", alice.public_key.raw, bob.public_key.raw)
    with pytest.raises(errors.CryptoError):
        open_nonce(alice, sealed, mediator_info)  # domain separation (section 3.2)
    other_pairing = challenge_info(alice.public_key.raw, bob.public_key.raw, bytes(16))
    with pytest.raises(errors.CryptoError):
        open_nonce(alice, sealed, other_pairing)
    carriers = [v for v in VECTORS["frames"] if v["message"] == "RelayChallenge"]
    assert carriers and all(v["fields"]["encrypted_nonce"] == vector["sealed"] for v in carriers)
    (response,) = [v for v in VECTORS["frames"] if v["message"] == "RelayResponse"]
    assert response["fields"]["nonce"] == vector["nonce"]


def test_relayed_handshake_vector() -> None:
    """Recomputed from its inputs; its prologue carries the relayed label, so the same keys
    and ephemerals on the direct prologue give other messages (section 4)."""
    from p2psc.core.peer import RELAYED_PROLOGUE_LABEL, prologue, session_secret
    from p2psc.noise import HandshakeState

    hs = VECTORS["relayed_handshake"]
    keys = VECTORS["keys"]
    alice, bob = (bytes.fromhex(keys[n]["public"]) for n in ("alice", "bob"))
    pid = bytes.fromhex(hs["pairing_id"])
    label = prologue(pid, alice, bob, relayed=True)
    assert label.hex() == hs["prologue"] and label.startswith(RELAYED_PROLOGUE_LABEL)

    def run(prologue_bytes: bytes) -> tuple[bytes, bytes, bytes]:
        init = HandshakeState.initiator(
            bytes.fromhex(keys["alice"]["private"]),
            bob,
            prologue_bytes,
            bytes.fromhex(hs["client_ephemeral_private"]),
        )
        resp = HandshakeState.responder(
            bytes.fromhex(keys["bob"]["private"]),
            alice,
            prologue_bytes,
            bytes.fromhex(hs["peer_ephemeral_private"]),
        )
        first = init.write_message(b"")
        resp.read_message(first)
        second = resp.write_message(b"")
        init.read_message(second)
        assert init.handshake_hash == resp.handshake_hash
        return first, second, init.handshake_hash

    first, second, digest = run(label)
    assert wire.encode(wire.HandshakeInit(first)).hex() == hs["handshake_init_frame"]
    assert wire.encode(wire.HandshakeResponse(second)).hex() == hs["handshake_response_frame"]
    assert wire.decode(bytes.fromhex(hs["handshake_init_frame"])) == wire.HandshakeInit(first)
    assert digest.hex() == hs["handshake_hash"]
    assert session_secret(digest).hex() == hs["session_secret"]
    direct_first, _, direct_digest = run(prologue(pid, alice, bob))
    assert direct_first != first and direct_digest != digest


def test_end_marker_vector() -> None:
    assert bytes.fromhex(VECTORS["end_marker"]) == END_MARKER


@pytest.mark.parametrize("vector", VECTORS["invalid_frames"], ids=lambda v: v["name"])
def test_invalid_relay_frame_vector(vector: dict[str, Any]) -> None:
    """Rejected by the stream splitter with the named error and reason, and by the whole-frame
    decoder as a ProtocolError; never taken for a Mediator message."""
    frame = bytes.fromhex(vector["hex"])
    error = getattr(errors, vector["error"])
    with pytest.raises(error) as caught:
        take_relay_frame(frame)
    assert vector["reason_contains"] in caught.value.reason
    with pytest.raises(errors.ProtocolError):
        decode_relay(frame)


def test_spec_section_9_matches_the_relay_vector_file() -> None:
    generator = load_generator()
    _, section = generator.split_relay_spec(SPEC)
    assert section.rstrip("\n") == generator.render_relay_section(VECTORS).rstrip("\n"), (
        "spec/relay.md section 9 differs from tests/vectors/relay_frames.json; "
        "run: .venv/bin/python tests/vectors/make_frames.py --update-spec"
    )


def test_regenerating_keeps_the_stored_sealed_nonce(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Sealing is randomised; the generator reuses the stored sealed nonce while it opens, so
    regenerating the file changes nothing, and replaces a stale one by a fresh seal."""
    generator = load_generator()
    assert generator.relay_main() == 0
    assert json.loads(capsys.readouterr().out) == VECTORS
    stale = json.loads(json.dumps(VECTORS))
    stale["sealed_nonces"][0]["sealed"] = "00" * 80
    generator.RELAY_VECTORS = tmp_path / "relay_frames.json"
    generator.RELAY_VECTORS.write_text(json.dumps(stale), encoding="utf-8")
    assert generator.relay_main() == 0
    fresh = json.loads(capsys.readouterr().out)["sealed_nonces"][0]
    assert fresh["sealed"] not in ("00" * 80, VECTORS["sealed_nonces"][0]["sealed"])
    opened = open_nonce(KEYS["alice"], bytes.fromhex(fresh["sealed"]), bytes.fromhex(fresh["info"]))
    assert opened.hex() == fresh["nonce"]
