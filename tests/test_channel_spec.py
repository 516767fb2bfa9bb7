"""spec/channel.md against the code: the worked example and the limits table.

The example's hex is recomputed from its keys by the implementation, so the spec cannot drift
from the code (and an independent implementation can trust it); the limits table is compared
with the constants of p2psc.core.channel, one row per constant.
"""

from __future__ import annotations

import re
from pathlib import Path

from p2psc.core import channel as ch
from p2psc.core.channel import SecureChannel
from p2psc.noise import PROTOCOL_NAME, HandshakeState, public_key

SPEC = (Path(__file__).parent.parent / "spec" / "channel.md").read_text(encoding="utf-8")


def example() -> dict[str, bytes]:
    block = SPEC.split("<!-- kk-example:begin -->")[1].split("<!-- kk-example:end -->")[0]
    values = {}
    for line in block.splitlines():
        if " = " in line:
            name, value = line.split(" = ")
            values[name.strip()] = bytes.fromhex(value.strip())
    return values


def test_worked_example_matches_the_implementation() -> None:
    v = example()
    assert len(v) == 15
    assert public_key(v["initiator_static_private"]) == v["initiator_static_public"]
    assert public_key(v["responder_static_private"]) == v["responder_static_public"]
    init = HandshakeState.initiator(
        v["initiator_static_private"],
        v["responder_static_public"],
        v["prologue"],
        v["initiator_ephemeral_private"],
    )
    resp = HandshakeState.responder(
        v["responder_static_private"],
        v["initiator_static_public"],
        v["prologue"],
        v["responder_ephemeral_private"],
    )
    assert init.write_message() == v["message_0"]
    assert resp.read_message(v["message_0"]) == b""
    assert resp.write_message() == v["message_1"]
    assert init.read_message(v["message_1"]) == b""
    assert init.handshake_hash == resp.handshake_hash == v["handshake_hash"]
    i_send, i_recv = init.split()
    assert (i_send.key, i_recv.key) == (v["initiator_send_key"], v["initiator_receive_key"])
    client, peer = SecureChannel(i_send, i_recv), SecureChannel(*resp.split())
    assert client.seal(b"") == v["record_0_initiator_key_confirmation"]
    assert peer.feed(v["record_0_initiator_key_confirmation"]) == []
    assert peer.seal(b"hello") == v["record_0_responder_hello"]
    assert client.feed(v["record_0_responder_hello"]) == [b"hello"]
    assert client.seal_close() == v["record_1_initiator_close"]
    assert peer.feed(v["record_1_initiator_close"]) == [ch.END_OF_STREAM]


def test_limits_table_matches_the_constants() -> None:
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| (\d+) \|", SPEC, flags=re.MULTILINE))
    names = [
        "HEADER_LEN",
        "TYPE_DATA",
        "TYPE_CLOSE",
        "MAX_RECORD_DATA",
        "MIN_RECORD_CIPHERTEXT",
        "MAX_RECORD_CIPHERTEXT",
        "MAX_RECORD_WIRE",
    ]
    assert sorted(rows) == sorted(names)
    for name in names:
        assert int(rows[name]) == getattr(ch, name), name


def test_spec_names_the_protocol() -> None:
    assert PROTOCOL_NAME.decode() in SPEC
