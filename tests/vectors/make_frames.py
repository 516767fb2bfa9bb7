"""Regenerate tests/vectors/frames.json and section 9 of spec/protocol.md from it, and
tests/vectors/relay_frames.json and section 9 of spec/relay.md from that.

Run: .venv/bin/python tests/vectors/make_frames.py > tests/vectors/frames.json
     .venv/bin/python tests/vectors/make_frames.py --relay > tests/vectors/relay_frames.json
     .venv/bin/python tests/vectors/make_frames.py --update-spec   (rewrites both sections 9)

tests/test_vectors.py checks that spec section 9 is exactly ``render_section(frames.json)``;
tests/test_relay_vectors.py, that relay.md section 9 is ``render_relay_section(relay_frames.json)``.

Everything is fixed except the sealed nonces: HPKE sealing is randomised (a fresh ephemeral key
each time), so a regenerated file has different, equally valid, sealed bytes. Existing vectors
should normally be kept; regenerate only when the protocol version changes.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from p2psc.keys import HPKE, Keypair, nonce_info
from p2psc.wire import (
    Address,
    Advertise,
    AdvertiseAbort,
    AdvertiseChallenge,
    AdvertiseResponse,
    AdvertiseRetry,
    HandshakeInit,
    HandshakeResponse,
    Message,
    PeerDisconnect,
    PeerIdentification,
    Ping,
    Pong,
    Reason,
    Status,
    StatusCode,
    candidates_extension,
    dial_delay_extension,
    encode,
)

# Fixed private keys (never use these for anything but test vectors).
ALICE = Keypair.from_private_raw(bytes.fromhex("a0" * 31 + "01"))  # the Client
BOB = Keypair.from_private_raw(bytes.fromhex("b0" * 31 + "02"))  # the Peer
NONCE_ADV = bytes(range(0x00, 0x20))
NONCE_CLIENT = bytes(range(0x20, 0x40))
NONCE_PEER = bytes(range(0x40, 0x60))
PAIRING_ID = bytes(range(0x60, 0x70))
EPHEMERAL_CLIENT = bytes([0x11]) * 32
EPHEMERAL_PEER = bytes([0x22]) * 32
COORDINATE = ((3, b""),)
"""The COORDINATE extension item (spec/protocol.md 3.4, type 3, empty)."""


def noise_messages() -> tuple[bytes, bytes]:
    """The two Noise KK messages of the direct handshake with the fixed keys, pairing id and
    ephemerals above (deterministic: spec/protocol.md section 9 shows them)."""
    from p2psc.core.peer import prologue
    from p2psc.noise import HandshakeState

    a, b = ALICE.public_key.raw, BOB.public_key.raw
    init = HandshakeState.initiator(
        ALICE.to_private_raw(), b, prologue(PAIRING_ID, a, b), EPHEMERAL_CLIENT
    )
    resp = HandshakeState.responder(
        BOB.to_private_raw(), a, prologue(PAIRING_ID, a, b), EPHEMERAL_PEER
    )
    first = init.write_message(b"")
    resp.read_message(first)
    second = resp.write_message(b"")
    init.read_message(second)
    return first, second


def fields_json(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in dataclasses.fields(msg):
        name = field.name
        value = getattr(msg, name)
        if isinstance(value, bytes):
            out[name] = value.hex()
        elif isinstance(value, Address):
            out[name] = str(value)
        elif value is None:
            out[name] = None
        elif name == "extensions":
            out[name] = [[kind, item.hex()] for kind, item in value]
        elif isinstance(value, int):
            out[name] = int(value)
        else:
            out[name] = value
    return out


def direct_handshake() -> dict[str, str]:
    """Inputs and outputs of the fixed Noise KK handshake (alice = Client, bob = Peer)."""
    from p2psc.core.peer import prologue, session_secret
    from p2psc.noise import HandshakeState

    a, b = ALICE.public_key.raw, BOB.public_key.raw
    first, second = noise_messages()
    init = HandshakeState.initiator(
        ALICE.to_private_raw(), b, prologue(PAIRING_ID, a, b), EPHEMERAL_CLIENT
    )
    init.write_message(b"")
    init.read_message(second)
    return {
        "pairing_id": PAIRING_ID.hex(),
        "client_ephemeral_private": EPHEMERAL_CLIENT.hex(),
        "peer_ephemeral_private": EPHEMERAL_PEER.hex(),
        "prologue": prologue(PAIRING_ID, a, b).hex(),
        "handshake_init": first.hex(),
        "handshake_response": second.hex(),
        "handshake_hash": init.handshake_hash.hex(),
        "session_secret": session_secret(init.handshake_hash).hex(),
    }


def bad(name: str, hex_: str, error: str, reason: str) -> dict[str, str]:
    """An invalid-frame vector: the frame, the error class it must raise, a part of its reason."""
    return {"name": name, "hex": hex_, "error": error, "reason_contains": reason}


def main() -> int:
    a, b = ALICE.public_key.raw, BOB.public_key.raw
    sealed = []
    for message, recipient, other, nonce in (("AdvertiseChallenge", ALICE, BOB, NONCE_ADV),):
        info = nonce_info(message, recipient.public_key.raw, other.public_key.raw)
        sealed.append(
            {
                "message": message,
                "recipient": "alice" if recipient is ALICE else "bob",
                "other": "alice" if other is ALICE else "bob",
                "info": info.hex(),
                "nonce": nonce.hex(),
                "sealed": HPKE.seal(recipient.public_key, nonce, info).hex(),
            }
        )
    (s_adv,) = (bytes.fromhex(s["sealed"]) for s in sealed)
    first, second = noise_messages()

    v4a = Address("203.0.113.10", 40001)
    v4b = Address("198.51.100.20", 50002)
    v6b = Address("2001:db8::20", 50002)
    msgs: list[tuple[str, Message]] = [
        ("Advertise", Advertise(1, a, b)),
        ("Advertise with IPv4 local address", Advertise(1, a, b, Address("192.168.1.10", 40001))),
        ("AdvertiseChallenge", AdvertiseChallenge(s_adv)),
        ("AdvertiseResponse", AdvertiseResponse(NONCE_ADV)),
        ("AdvertiseAbort", AdvertiseAbort(Reason.SELF_PAIRING, "our_key equals their_key")),
        ("AdvertiseAbort with unknown code", AdvertiseAbort(1000, "géén reden")),
        ("AdvertiseRetry", AdvertiseRetry(Reason.BUSY, "")),
        ("PeerDisconnect", PeerDisconnect(PAIRING_ID, v6b, v4a, Address("10.0.0.5", 40001))),
        ("PeerDisconnect without local address", PeerDisconnect(PAIRING_ID, v4b, v4a)),
        ("PeerIdentification", PeerIdentification(1, PAIRING_ID, v4b)),
        (
            "PeerIdentification with IPv6 local address",
            PeerIdentification(1, PAIRING_ID, v6b, Address("fd00::20", 50002)),
        ),
        (
            "PeerDisconnect with candidates",
            PeerDisconnect(
                PAIRING_ID,
                v4b,
                v4a,
                Address("10.0.0.5", 40001),
                candidates_extension([Address("10.0.1.5", 40001), Address("2001:db8::5", 40001)]),
            ),
        ),
        (
            "PeerDisconnect with candidates and a dial delay",
            PeerDisconnect(
                PAIRING_ID,
                v4b,
                v4a,
                None,
                (
                    *candidates_extension([Address("10.0.1.5", 40001)]),
                    *dial_delay_extension(170),
                ),
            ),
        ),
        (
            "Advertise with a candidate and an unknown extension",
            Advertise(
                1,
                a,
                b,
                Address("192.168.1.10", 40001),
                (*candidates_extension([Address("2001:db8::10", 40001)]), (200, b"\x01\x02")),
            ),
        ),
        ("HandshakeInit", HandshakeInit(first)),
        ("HandshakeResponse", HandshakeResponse(second)),
        ("Ping", Ping(7, 15000)),
        ("Pong", Pong(7)),
        ("Advertise offering COORDINATE", Advertise(1, a, b, None, COORDINATE)),
        (
            "PeerDisconnect of a coordinated pairing, with candidates",
            PeerDisconnect(
                PAIRING_ID,
                v4b,
                v4a,
                None,
                (*candidates_extension([Address("10.0.1.5", 40001)]), *COORDINATE),
            ),
        ),
        (
            "PeerIdentification of a coordinated pairing",
            PeerIdentification(1, PAIRING_ID, v4b, None, COORDINATE),
        ),
        ("Status PUNCHING (the Peer's confirmation)", Status(StatusCode.PUNCHING)),
        ("Status DIRECT", Status(StatusCode.DIRECT)),
        ("Status GAVE_UP", Status(StatusCode.GAVE_UP)),
        (
            "AdvertiseAbort PARTNER_LOST",
            AdvertiseAbort(Reason.PARTNER_LOST, "your partner's connection closed: it is gone"),
        ),
    ]
    frames = [
        {
            "name": name,
            "message": type(msg).__name__,
            "type": int(msg.TYPE),
            "fields": fields_json(msg),
            "hex": encode(msg).hex(),
        }
        for name, msg in msgs
    ]
    retry = encode(AdvertiseRetry(Reason.BUSY, "")).hex()
    resp = encode(AdvertiseResponse(NONCE_ADV)).hex()
    pid = PAIRING_ID.hex()
    plain = encode(PeerDisconnect(PAIRING_ID, v4b, v4a))
    short = plain[6:] + bytes((2, 1, 0xAA))  # a DIAL_DELAY item of 1 byte instead of 2
    short_dial_delay = plain[:4] + len(short).to_bytes(2, "big") + short

    invalid = [
        bad("bad magic", "5033010a0000", "ProtocolError", "magic"),
        bad("version 2 header", "5032020a0000", "UnsupportedVersion", "version 2"),
        bad("unknown type 20", "503201140000", "ProtocolError", "unknown message type"),
        bad("length above 4096", "503201031001", "ProtocolError", "exceeds"),
        bad("truncated payload", resp[:-2], "ProtocolError", "truncated"),
        bad("retired type 9", "503201090000", "ProtocolError", "unknown message type"),
        bad("trailing byte after frame", retry + "00", "ProtocolError", "trailing"),
        bad("trailing byte in payload", "503201020021" + "00" * 33, "ProtocolError", "32"),
        bad(
            "port 0",
            "503201060019" + "01" + pid + "04c63364140000" + "00",
            "ProtocolError",
            "port 0",
        ),
        bad(
            "address family 5",
            "503201060019" + "01" + pid + "05c6336414c352" + "00",
            "ProtocolError",
            "family",
        ),
        bad(
            "extension types not increasing",
            "50320106001d" + "01" + pid + "04c6336414c35200" + "0500" + "0300",
            "ProtocolError",
            "strictly increasing",
        ),
        bad(
            "DIAL_DELAY of one byte",
            short_dial_delay.hex(),
            "ProtocolError",
            "DIAL_DELAY has 1 bytes",
        ),
        bad("Ping interval 999 ms", "5032010b0008" + "00000007000003e7", "ProtocolError", "1000"),
        bad("Status 0", "5032010d000100", "ProtocolError", "must be 1..4"),
        bad("Status 5", "5032010d000105", "ProtocolError", "must be 1..4"),
        bad("Status of 2 bytes", "5032010d00020201", "ProtocolError", "Status"),
        bad(
            "COORDINATE with a value",
            "50320106001c" + "01" + pid + "04c6336414c35200" + "030101",
            "ProtocolError",
            "COORDINATE must be empty",
        ),
        bad("HandshakeInit too short", "503201070010" + "00" * 16, "ProtocolError", "Noise"),
        bad("non-UTF-8 reason", "503201030006" + "00000002fffe", "ProtocolError", "UTF-8"),
        bad(
            "reason text of 1025 bytes",
            "503201040405" + "00050401" + "61" * 1025,
            "ProtocolError",
            "exceeds",
        ),
        bad(
            "payload too short for keys",
            "503201000041" + "01" + "11" * 64,
            "ProtocolError",
            "truncated",
        ),
    ]
    doc = {
        "description": "p2psc protocol version 1 test vectors; see spec/protocol.md section 9",
        "protocol_version": 1,
        "keys": {
            "alice": {"private": ALICE.to_private_raw().hex(), "public": a.hex()},
            "bob": {"private": BOB.to_private_raw().hex(), "public": b.hex()},
        },
        "sealed_nonces": sealed,
        "direct_handshake": direct_handshake(),
        "frames": frames,
        "invalid_frames": invalid,
    }
    json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "spec" / "protocol.md"
VECTORS = ROOT / "tests" / "vectors" / "frames.json"
SECTION = "## 9. Test vectors"


def _wrap(hex_: str, indent: str = "") -> str:
    return ("\n" + indent).join(textwrap.wrap(hex_, 64))


def _runs(h: str) -> str:
    """A long vector in full, but readable: its head in hex, then its trailing run of one
    repeated byte as a count (the text itself is the normative vector, not frames.json)."""
    data = bytes.fromhex(h)
    last = data[-1]
    head = data.rstrip(bytes((last,)))
    run = len(data) - len(head)
    if len(head) * 2 > 160 or run < 16:
        raise ValueError(f"no short form for a {len(data)}-byte vector")
    return f"`{head.hex()}` then {run} bytes `{last:02x}` ({len(data)} bytes in all)"


def _frame_lines(frames: list[dict[str, Any]], names: dict[str, str]) -> list[str]:
    """Each frame vector as a heading with its fields (a value with a name in ``names``, such as
    a key or the sealed nonce, is shown by that name) and its hex."""

    def show(value: Any) -> str:
        if isinstance(value, str) and value in names:
            return names[value]
        return "`" + json.dumps(value, ensure_ascii=False) + "`"

    out: list[str] = []
    for v in frames:
        fields = ", ".join(f"{k} = {show(x)}" for k, x in v["fields"].items()) or "no fields"
        size = len(v["hex"]) // 2
        out += [f"**{v['name']}** (type {v['type']}, {size} bytes): {fields}", ""]
        out += ["```", _wrap(v["hex"]), "```", ""]
    return out


def render_section(doc: dict[str, Any]) -> str:
    """Section 9 of spec/protocol.md (Markdown) from the vectors document."""
    out = [SECTION, "", "Fixed keys (test only, never use them for anything else):", ""]
    out += ["| name | private key (raw) | public key (raw) |", "|---|---|---|"]
    out += [f"| {n} | `{k['private']}` | `{k['public']}` |" for n, k in doc["keys"].items()]
    out += [
        "",
        "The sealed nonces below were produced once with the suite of section 6.2 and are "
        "stored, since\nsealing is randomised: an implementation checks them by **opening** "
        "them with the private key\nand the info shown, which must give the nonce.",
        "",
    ]
    for v in doc["sealed_nonces"]:
        pad = " " * 9
        out += [
            f"**{v['message']}** (sealed to {v['recipient']}, other = {v['other']}):",
            "",
            "```",
            f"info   = {_wrap(v['info'], pad)}",
            f"nonce  = {v['nonce']}",
            f"sealed = {_wrap(v['sealed'], pad)}",
            "```",
            "",
        ]
    hs = doc["direct_handshake"]
    out += [
        "**The direct handshake** (Noise KK, alice the Client, bob the Peer; ephemeral keys fixed "
        'for the\nvector, never in use): the prologue of the section "The peer side", both '
        "Noise messages, the\nhandshake hash and the session secret of section 6.4.",
        "",
        "```",
    ]
    out += [f"{name:<26}= {_wrap(value, ' ' * 28)}" for name, value in hs.items()]
    out += ["```", ""]
    names = {k["public"]: f"{n}'s public key" for n, k in doc["keys"].items()}
    names[hs["pairing_id"]] = "the pairing id above"
    names[hs["handshake_init"]] = "handshake_init above"
    names[hs["handshake_response"]] = "handshake_response above"
    names.update(
        {x["sealed"]: f"the {x['message']} sealed nonce above" for x in doc["sealed_nonces"]}
    )
    names.update({x["nonce"]: f"the {x['message']} nonce above" for x in doc["sealed_nonces"]})

    out += ["One valid frame per message type (and a few variants), as hex:", ""]
    out += _frame_lines(doc["frames"], names)
    out += [
        "Invalid frames; each MUST be rejected (the error column names our exception class;",
        "UnsupportedVersion is a kind of ProtocolError):",
        "",
        "| case | frame (hex) | error |",
        "|---|---|---|",
    ]
    for v in doc["invalid_frames"]:
        h = v["hex"]
        shown = f"`{h}`" if len(h) <= 160 else _runs(h)
        out.append(f"| {v['name']} | {shown} | {v['error']} |")
    return "\n".join(out) + "\n"


def split_spec(text: str) -> tuple[str, str, str]:
    """(before section 9, section 9, the sections after it) of spec/protocol.md."""
    head, rest = text.split(SECTION, 1)
    body, sep, tail = rest.partition("\n## ")
    return head, SECTION + body + ("\n" if sep else ""), ("## " + tail) if sep else ""


def update_spec() -> int:
    """Replace section 9 of spec/protocol.md with the rendered vectors (other sections kept)."""
    head, _, tail = split_spec(SPEC.read_text(encoding="utf-8"))
    doc = json.loads(VECTORS.read_text(encoding="utf-8"))
    section = render_section(doc)
    SPEC.write_text(head + section + ("\n" + tail if tail else ""), encoding="utf-8")
    return 0


# --- the relay protocol (spec/relay.md) ----------------------------------------------------

RELAY_SPEC = ROOT / "spec" / "relay.md"
RELAY_VECTORS = ROOT / "tests" / "vectors" / "relay_frames.json"
NONCE_RELAY = bytes(range(0x80, 0xA0))
RELAY_EPHEMERAL_CLIENT = bytes([0x33]) * 32
RELAY_EPHEMERAL_PEER = bytes([0x44]) * 32


def relay_messages() -> list[tuple[str, Any]]:
    """One valid message per relay frame type and a few variants; the RelayChallenge carries
    ``sealed`` (the stored sealed nonce)."""
    from p2psc.relay_wire import (
        RelayAbort,
        RelayConnected,
        RelayReason,
        RelayRequest,
        RelayResponse,
    )

    a, b = ALICE.public_key.raw, BOB.public_key.raw
    return [
        ("RelayRequest (alice's leg)", RelayRequest(1, a, b, PAIRING_ID)),
        ("RelayRequest (bob's leg)", RelayRequest(1, b, a, PAIRING_ID)),
        ("RelayResponse", RelayResponse(NONCE_RELAY)),
        ("RelayConnected, 3600 s and 1 GiB", RelayConnected(3600, 1 << 30)),
        ("RelayConnected without limits", RelayConnected(0, 0)),
        ("RelayAbort RELAY_LIMIT", RelayAbort(RelayReason.RELAY_LIMIT, "limit")),
        ("RelayAbort RELAY_NO_PARTNER", RelayAbort(RelayReason.RELAY_NO_PARTNER, "")),
        ("RelayAbort RELAY_REFUSED", RelayAbort(RelayReason.RELAY_REFUSED, "too many circuits")),
        ("RelayAbort IDENTITY_CHECK_FAILED", RelayAbort(Reason.IDENTITY_CHECK_FAILED, "nonce")),
    ]


def relay_fields(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in dataclasses.fields(msg):
        value = getattr(msg, field.name)
        out[field.name] = value.hex() if isinstance(value, bytes) else value
    return out


def relayed_handshake() -> dict[str, str]:
    """The Noise KK handshake through a relay with fixed keys and ephemerals: the same as the
    direct one but for the relayed prologue label (spec/relay.md section 4)."""
    from p2psc.core.peer import prologue, session_secret
    from p2psc.noise import HandshakeState

    a, b = ALICE.public_key.raw, BOB.public_key.raw
    label = prologue(PAIRING_ID, a, b, relayed=True)
    init = HandshakeState.initiator(ALICE.to_private_raw(), b, label, RELAY_EPHEMERAL_CLIENT)
    resp = HandshakeState.responder(BOB.to_private_raw(), a, label, RELAY_EPHEMERAL_PEER)
    first = init.write_message(b"")
    resp.read_message(first)
    second = resp.write_message(b"")
    init.read_message(second)
    return {
        "pairing_id": PAIRING_ID.hex(),
        "client_ephemeral_private": RELAY_EPHEMERAL_CLIENT.hex(),
        "peer_ephemeral_private": RELAY_EPHEMERAL_PEER.hex(),
        "prologue": label.hex(),
        "handshake_init_frame": encode(HandshakeInit(first)).hex(),
        "handshake_response_frame": encode(HandshakeResponse(second)).hex(),
        "handshake_hash": init.handshake_hash.hex(),
        "session_secret": session_secret(init.handshake_hash).hex(),
    }


def relay_main(sealed_hex: str | None = None) -> int:
    """Print the relay vectors document. The sealed nonce is taken from the existing file when
    it still opens to the stored nonce (sealing is randomised: regenerating keeps it stable)."""
    from p2psc.keys import open_nonce
    from p2psc.relay_wire import END_MARKER, RelayChallenge, challenge_info

    a, b = ALICE.public_key.raw, BOB.public_key.raw
    info = challenge_info(a, b, PAIRING_ID)
    if sealed_hex is None and RELAY_VECTORS.exists():
        old = json.loads(RELAY_VECTORS.read_text(encoding="utf-8"))["sealed_nonces"][0]
        try:
            if open_nonce(ALICE, bytes.fromhex(old["sealed"]), info) == NONCE_RELAY:
                sealed_hex = old["sealed"]
        except Exception:  # the stored one no longer opens: seal a new one
            sealed_hex = None
    if sealed_hex is None:
        sealed_hex = HPKE.seal(ALICE.public_key, NONCE_RELAY, info).hex()
    msgs = relay_messages()
    msgs.insert(2, ("RelayChallenge", RelayChallenge(bytes.fromhex(sealed_hex))))
    frames = [
        {
            "name": name,
            "message": type(msg).__name__,
            "type": int(msg.TYPE),
            "fields": relay_fields(msg),
            "hex": msg.encode().hex(),
        }
        for name, msg in msgs
    ]
    request = msgs[0][1].encode().hex()
    connected = msgs[4][1].encode().hex()

    invalid = [
        bad("reserved type 19", "503201130000", "ProtocolError", "unexpected message type 19"),
        bad("a Mediator message (Advertise)", "503201000041", "ProtocolError", "unexpected"),
        bad("bad magic", "5033010e0000", "ProtocolError", "magic"),
        bad("version 2 header", "5032020e0051", "UnsupportedVersion", "version 2"),
        bad("length above 4096", "5032010e1001", "ProtocolError", "exceeds"),
        bad(
            "RelayRequest one byte short",
            "5032010e0050" + request[12:-2],
            "ProtocolError",
            "truncated",
        ),
        bad(
            "RelayRequest with a trailing byte",
            "5032010e0052" + request[12:] + "00",
            "ProtocolError",
            "trailing",
        ),
        bad("RelayResponse of 31 bytes", "50320110001f" + "00" * 31, "ProtocolError", "truncated"),
        bad("RelayChallenge of 81 bytes", "5032010f0051" + "00" * 81, "ProtocolError", "trailing"),
        bad("RelayConnected of 11 bytes", "50320111000b" + connected[12:-2], "ProtocolError", "11"),
        bad(
            "RelayAbort with non-UTF-8 text",
            "5032011200060003" + "0002fffe",
            "ProtocolError",
            "UTF-8",
        ),
    ]
    doc = {
        "description": (
            "p2psc relay protocol (version 1) test vectors; see spec/relay.md section 9"
        ),
        "protocol_version": 1,
        "keys": {
            "alice": {"private": ALICE.to_private_raw().hex(), "public": a.hex()},
            "bob": {"private": BOB.to_private_raw().hex(), "public": b.hex()},
        },
        "sealed_nonces": [
            {
                "message": "RelayChallenge",
                "recipient": "alice",
                "other": "bob",
                "pairing_id": PAIRING_ID.hex(),
                "info": info.hex(),
                "nonce": NONCE_RELAY.hex(),
                "sealed": sealed_hex,
            }
        ],
        "relayed_handshake": relayed_handshake(),
        "end_marker": END_MARKER.hex(),
        "frames": frames,
        "invalid_frames": invalid,
    }
    json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


RELAY_SECTION = "## 9. Test vectors"


def render_relay_section(doc: dict[str, Any]) -> str:
    """Section 9 of spec/relay.md (Markdown) from the relay vectors document."""
    sealed = doc["sealed_nonces"][0]
    hs = doc["relayed_handshake"]
    pad = " " * 9
    out = [
        RELAY_SECTION,
        "",
        "Machine-readable in `tests/vectors/relay_frames.json` (checked against our codec by",
        "`tests/test_relay_vectors.py`). The keys are alice's and bob's of",
        "[protocol.md](protocol.md) section 9; the pairing id is `" + hs["pairing_id"] + "`.",
        "",
        "**RelayChallenge** sealed to alice (her leg names bob; the info ends with the pairing",
        "id): open it with alice's private key and this info, which must give the nonce.",
        "",
        "```",
        f"info   = {_wrap(sealed['info'], pad)}",
        f"nonce  = {sealed['nonce']}",
        f"sealed = {_wrap(sealed['sealed'], pad)}",
        "```",
        "",
        "**The relayed handshake** (section 4; alice the Client, bob the Peer, ephemeral keys",
        "fixed for the vector): the prologue with the relayed label, both handshake frames as",
        "they cross the spliced circuit (whole frames, header included), the handshake hash and",
        "the session secret. The same keys on a direct path give other messages (protocol.md 9).",
        "",
        "```",
    ]
    out += [f"{name:<26}= {_wrap(value, ' ' * 28)}" for name, value in hs.items()]
    out += ["```", "", f"The end marker (section 7): `{doc['end_marker']}`.", ""]
    names = {k["public"]: f"{n}'s public key" for n, k in doc["keys"].items()}
    names[hs["pairing_id"]] = "the pairing id"
    names[sealed["sealed"]] = "the sealed nonce above"
    names[sealed["nonce"]] = "the nonce above"

    out += ["One valid frame per relay message type (and a few variants), as hex:", ""]
    out += _frame_lines(doc["frames"], names)
    out += [
        "Invalid frames on a relay connection; each MUST be rejected (the error column names our",
        "exception class; UnsupportedVersion is a kind of ProtocolError):",
        "",
        "| case | frame (hex) | error |",
        "|---|---|---|",
    ]
    for v in doc["invalid_frames"]:
        h = v["hex"]
        shown = f"`{h}`" if len(h) <= 200 else f"`{h[:64]}...` ({len(h) // 2} bytes)"
        out.append(f"| {v['name']} | {shown} | {v['error']} |")
    return "\n".join(out) + "\n"


def split_relay_spec(text: str) -> tuple[str, str]:
    """(before section 9, section 9) of spec/relay.md (section 9 is its last)."""
    if RELAY_SECTION not in text:
        return text.rstrip("\n") + "\n\n", ""
    head, rest = text.split(RELAY_SECTION, 1)
    return head, RELAY_SECTION + rest


def update_relay_spec() -> None:
    head, _ = split_relay_spec(RELAY_SPEC.read_text(encoding="utf-8"))
    doc = json.loads(RELAY_VECTORS.read_text(encoding="utf-8"))
    RELAY_SPEC.write_text(head + render_relay_section(doc), encoding="utf-8")


if __name__ == "__main__":
    if "--update-spec" in sys.argv:
        update_spec()
        update_relay_spec()
        raise SystemExit(0)
    raise SystemExit(relay_main() if "--relay" in sys.argv else main())
