"""Operating ``p2psc mediator`` (issue 21): descriptor limits, accept() failures, TLS files and
SIGHUP, Prometheus metrics, rate-limited and escaped logs. Each test runs its own subprocess
on loopback and kills it (bounded) on the way out."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tls_certs import make_leaf

from p2psc import wire
from p2psc.cli import mediator as cli
from p2psc.core.mediator import MediatorConfig, MediatorNote
from p2psc.core.relay import RelayConfig
from p2psc.fdlimits import (
    HEADROOM,
    LimitsDoNotFit,
    NofileLimit,
    fit_limits,
    fit_relay_limits,
    relay_descriptors,
    relay_share,
)
from p2psc.keys import Keypair, nonce_info, open_nonce
from p2psc.text import printable
from p2psc.tls import TlsClientSession, certificate_fingerprint, client_context

# --- the pure parts -------------------------------------------------------------------------


def test_fit_limits_derives_from_the_descriptors_available() -> None:
    config = fit_limits(MediatorConfig(), NofileLimit(1024, 1024))
    available = 1024 - HEADROOM
    assert config.max_connections == available
    assert config.max_pending == available // 4
    assert config.max_waiting == available - available // 4
    assert config.max_pending_per_ip == min(256, config.max_pending)
    big = fit_limits(MediatorConfig(), NofileLimit(1_000_000, 1_000_000))
    assert (big.max_pending, big.max_waiting) == (4096, 100_000)  # the defaults are ceilings


def test_fit_limits_refuses_explicit_limits_that_cannot_fit() -> None:
    nofile = NofileLimit(20_000, 20_000)
    with pytest.raises(LimitsDoNotFit, match="max-waiting 100000"):
        fit_limits(MediatorConfig(max_waiting=100_000), nofile, frozenset({"max_waiting"}))
    with pytest.raises(LimitsDoNotFit, match="max-connections 30000"):
        fit_limits(MediatorConfig(max_connections=30_000), nofile, frozenset({"max_connections"}))
    ok = fit_limits(MediatorConfig(max_waiting=10_000), nofile, frozenset({"max_waiting"}))
    assert ok.max_waiting == 10_000 and ok.max_connections == 20_000 - HEADROOM


def test_fit_limits_leaves_the_relay_share_out() -> None:
    nofile = NofileLimit(1024, 1024)
    config = fit_limits(MediatorConfig(), nofile, reserved=480)
    assert config.max_connections == 1024 - HEADROOM - 480
    assert config.max_pending + config.max_waiting <= config.max_connections
    with pytest.raises(LimitsDoNotFit, match="480 for the relay"):
        fit_limits(
            MediatorConfig(max_connections=600),
            nofile,
            frozenset({"max_connections"}),
            reserved=480,
        )


def test_fit_relay_limits_derives_and_refuses() -> None:
    """Derived: four fifths admitted legs, the rest silent connections, the defaults as
    ceilings, per-address and per-key limits no larger than the total; explicit limits that
    need more than available are refused, naming the flags as given."""
    small = fit_relay_limits(RelayConfig(), 200)
    assert (small.max_connections, small.max_pending) == (160, 40)
    assert relay_descriptors(small) == 200
    assert small.max_per_address == 64 and small.max_per_key == 16
    tiny = fit_relay_limits(RelayConfig(), 10)
    assert (tiny.max_connections, tiny.max_per_address, tiny.max_per_key) == (8, 8, 8)
    big = fit_relay_limits(RelayConfig(), 1_000_000)
    assert (big.max_connections, big.max_pending) == (4096, 1024)
    kept = fit_relay_limits(RelayConfig(max_pending=10), 200, frozenset({"max_pending"}))
    assert (kept.max_connections, kept.max_pending) == (160, 10)
    with pytest.raises(LimitsDoNotFit, match="--relay-max-connections 5000"):
        fit_relay_limits(
            RelayConfig(max_connections=5000), 900, frozenset({"max_connections"}), prefix="relay-"
        )
    with pytest.raises(LimitsDoNotFit, match="no descriptors"):
        fit_relay_limits(RelayConfig(), 1)


def test_relay_share_is_what_explicit_limits_need_else_at_most_half() -> None:
    nofile = NofileLimit(1024, 1024)
    assert relay_share(RelayConfig(), nofile, frozenset()) == (1024 - HEADROOM) // 2
    roomy = NofileLimit(1_000_000, 1_000_000)
    assert relay_share(RelayConfig(), roomy, frozenset()) == relay_descriptors(RelayConfig())
    both = frozenset({"max_connections", "max_pending"})
    wanted = RelayConfig(max_connections=700, max_pending=100)
    assert relay_share(wanted, nofile, both) == 800
    one = RelayConfig(max_connections=700)
    assert relay_share(one, nofile, frozenset({"max_connections"})) == 701


def test_printable_escapes_what_a_terminal_would_obey() -> None:
    evil = "ok\x1b[2J\x1b[H\rconnected ... verified\n\u202eevil\x07\x9b"
    shown = printable(evil)
    assert all(ch.isprintable() for ch in shown)
    assert "\\x1b[2J" in shown and "\\r" not in shown and "\\x0d" in shown
    assert "\\u202e" in shown and "\\x9b" in shown
    assert printable("plain text: é ü 日本") == "plain text: é ü 日本"
    assert printable("a\\x1b") == "a\\\\x1b"  # an escape in the input stays distinguishable
    assert printable(b"\xff\x1b") == "\ufffd\\x1b"
    assert printable("x" * 10, limit=4) == "xxxx..."


def test_text_log_lines_escape_network_text(caplog: pytest.LogCaptureFixture) -> None:
    record = logging.LogRecord("p2psc.mediator", logging.WARNING, "", 0, "failed", None, None)
    record.p2psc = {"event": "failed", "reason": "bad\x1b[2J\nforged line"}
    line = cli._TextFormatter().format(record)
    assert "\x1b" not in line and "\n" not in line and "\\x1b[2J\\x0aforged" in line


def test_floods_are_logged_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    clock = [100.0]
    cli.log.setLevel(logging.INFO)
    observer = cli._LogObserver(clock=lambda: clock[0])
    with caplog.at_level(logging.INFO, logger="p2psc.mediator"):
        for n in range(500):
            observer(MediatorNote("evicted", n, ("192.0.2.1", n), reason="r", cause="c"))
        clock[0] += 1.5
        observer(MediatorNote("evicted", 999, ("192.0.2.1", 1), reason="r", cause="c"))
        observer(MediatorNote("registered", 1000, ("192.0.2.1", 1)))
    events = [getattr(r, "p2psc", {}) for r in caplog.records]
    evicted = [e for e in events if e.get("event") == "evicted"]
    assert len(evicted) == cli._FLOOD_RATE + 1
    assert evicted[-1]["suppressed"] == 500 - cli._FLOOD_RATE
    assert any(e.get("event") == "registered" for e in events)  # other kinds are not limited


# --- subprocesses ---------------------------------------------------------------------------

_MEDIATOR = [sys.executable, "-m", "p2psc", "mediator", "--port", "0"]


class Mediator:
    """A ``p2psc mediator`` subprocess and its JSON log lines.

    A thread reads stderr all the time: a debug-level mediator writes more than a pipe holds,
    and a pipe nobody drains would block the mediator in the middle of serving (it did, in a
    full conformance run)."""

    def __init__(self, args: list[str], nofile: int | None = None) -> None:
        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            [*_MEDIATOR, "--log-format", "json", "--log-level", "debug", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            preexec_fn=limit,
        )
        self.lines: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._ended = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with contextlib.suppress(ValueError), self._changed:
                self.lines.append(json.loads(raw))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        with self._changed:
            while True:
                for entry in self.lines:
                    if entry.get("event") == event:
                        self.lines.remove(entry)
                        return entry
                if self._ended:
                    raise EOFError(f"mediator exited; got {self.lines}")
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {event!r} line; got {self.lines}")
                self._changed.wait(left)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def mediators() -> Iterator[list[Mediator]]:
    started: list[Mediator] = []
    try:
        yield started
    finally:
        for mediator in started:
            mediator.stop()


def _start(mediators: list[Mediator], args: list[str], nofile: int | None = None) -> Mediator:
    mediator = Mediator(args, nofile)
    mediators.append(mediator)
    return mediator


def _register(port: int, kp: Keypair, their: Keypair) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(wire.Advertise(1, kp.public_key.raw, their.public_key.raw).encode())
    challenge = _recv(sock)
    assert isinstance(challenge, wire.AdvertiseChallenge), challenge
    info = nonce_info("AdvertiseChallenge", kp.public_key.raw, their.public_key.raw)
    sock.sendall(wire.AdvertiseResponse(open_nonce(kp, challenge.encrypted_nonce, info)).encode())
    return sock


def _recv(sock: socket.socket) -> wire.Message | None:
    decoder = wire.FrameDecoder()
    while True:
        data = sock.recv(65536)
        if not data:
            return None
        messages = decoder.feed(data)
        if messages:
            return messages[0]


def _pair(port: int) -> None:
    """Two fresh identities pair through the mediator: it is serving."""
    a, b = Keypair.generate(), Keypair.generate()
    with _register(port, a, b) as client:
        time.sleep(0.1)
        with _register(port, b, a) as peer:
            assert isinstance(_recv(peer), wire.PeerDisconnect)
        assert isinstance(_recv(client), wire.PeerIdentification)


def test_limits_are_derived_from_a_low_descriptor_limit(mediators: list[Mediator]) -> None:
    mediator = _start(mediators, [], nofile=300)
    listening = mediator.wait_for("listening")
    assert listening["nofile"] == 300
    assert listening["max_connections"] == 300 - HEADROOM
    assert listening["max_pending"] + listening["max_waiting"] <= 300 - HEADROOM
    _pair(int(listening["port"]))


def test_explicit_limits_that_cannot_fit_refuse_to_start() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "p2psc", "mediator", "--port", "0", "--max-waiting", "100000"],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096)),
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot start" in lines[0] and "--max-waiting 100000" in lines[0]
    assert "RLIMIT_NOFILE allows 4096" in lines[0]


def test_a_relay_in_the_mediator_gets_its_share_of_the_descriptors(
    mediators: list[Mediator],
) -> None:
    """``mediator --relay``: the relay's connection limits and the Mediator's together fit the
    descriptors (before, the Mediator took all of them and the relay its defaults on top)."""
    mediator = _start(mediators, ["--relay"], nofile=1024)
    listening = mediator.wait_for("listening")
    relay = listening["relay_max_connections"] + listening["relay_max_pending"]
    assert relay == (1024 - HEADROOM) // 2
    assert listening["max_connections"] + relay == 1024 - HEADROOM
    _pair(int(listening["port"]))


def _cli(args: list[str], nofile: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2psc", *args],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)),
    )


def test_relay_limits_that_cannot_fit_refuse_to_start() -> None:
    done = _cli(["relay", "--port", "0", "--max-connections", "5000"], nofile=1024)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot start" in lines[0] and "--max-connections 5000" in lines[0]
    assert "RLIMIT_NOFILE allows 1024" in lines[0]
    both = ["mediator", "--port", "0", "--relay", "--relay-max-connections", "1000"]
    done = _cli(both, nofile=1024)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--relay-max-connections 1000" in lines[0], lines
    assert "left for the Mediator" in lines[0]
    mediator = ["mediator", "--port", "0", "--relay", "--relay-max-connections", "900"]
    done = _cli([*mediator, "--max-connections", "100"], nofile=1024)
    assert done.returncode == 1  # 901 for the relay leave 59 for the Mediator
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--max-connections 100" in lines[0], lines
    assert "901 for the relay" in lines[0]
    done = _cli(["mediator", "--port", "0", "--relay", "--relay-max-pending", "0"], nofile=1024)
    assert done.returncode == 1 and "at least 1" in done.stderr and "Traceback" not in done.stderr


def test_a_relay_fits_its_limits_to_a_low_descriptor_limit() -> None:
    """``p2psc relay`` under RLIMIT_NOFILE 256: its listening line shows limits that fit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2psc", "relay", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)),
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "relay listening" in line, line
        fields = dict(re.findall(r"(max_connections|max_pending|nofile) (\d+)", line))
        assert fields == {"max_connections": "153", "max_pending": "39", "nofile": "256"}
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_accept_failures_are_logged_and_serving_goes_on(
    mediators: list[Mediator], loop: str
) -> None:
    """The descriptor limit is lowered under a running mediator (prlimit) so accept() fails
    with EMFILE: one log line with the reason, and once descriptors are back it serves."""
    args = [] if loop == "uvloop" else ["--no-uvloop"]
    mediator = _start(mediators, args, nofile=256)
    port = int(mediator.wait_for("listening")["port"])
    pid = mediator.proc.pid
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 2, 256))
    flood: list[socket.socket] = []
    try:
        for _ in range(20):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        failed = mediator.wait_for("accept_failed", timeout=10)
        assert failed["errno"] == "EMFILE" and failed["reason"]
        assert mediator.proc.poll() is None
    finally:
        for sock in flood:
            sock.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (256, 256))
    deadline = time.monotonic() + 10
    while True:  # the listener is still there and serves again
        try:
            _pair(port)
            break
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_tls_files_reload_on_sighup_and_bad_files_fail_clearly(
    mediators: list[Mediator], tmp_path: Path
) -> None:
    first = make_leaf(tmp_path, "first")
    mediator = _start(mediators, ["--tls-cert", str(first.cert), "--tls-key", str(first.key)])
    listening = mediator.wait_for("listening")
    assert listening["tls"] is True
    port = int(listening["port"])

    def served_fingerprint() -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            session = TlsClientSession(client_context(insecure=True), None)
            sock.sendall(session.start())
            while not session.handshake_done:
                session.receive(sock.recv(65536))
                sock.sendall(session.data_to_send())
            der = session.ssl_object.getpeercert(binary_form=True)
            assert der is not None
            sock.sendall(session.close())
            return certificate_fingerprint(der)

    assert served_fingerprint() == certificate_fingerprint(first.der)
    second = make_leaf(tmp_path, "second")
    first.cert.write_bytes(second.cert.read_bytes())
    first.key.write_bytes(second.key.read_bytes())
    mediator.proc.send_signal(signal.SIGHUP)
    mediator.wait_for("tls_reloaded")
    assert served_fingerprint() == certificate_fingerprint(second.der)
    first.key.write_text("not a key")
    mediator.proc.send_signal(signal.SIGHUP)
    assert "cannot load" in mediator.wait_for("tls_reload_failed")["reason"]
    assert served_fingerprint() == certificate_fingerprint(second.der)  # the old one stays

    done = subprocess.run(
        [*_MEDIATOR, "--tls-cert", str(tmp_path / "missing.pem")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert "missing.pem" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "p2psc", "mediator", "--port", "0", "--require-tls"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1 and "--tls-cert" in done.stderr


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics_endpoint(mediators: list[Mediator]) -> None:
    mediator = _start(
        mediators, ["--metrics-port", "0", "--max-pending-per-ip", "2", "--max-pending", "100"]
    )
    port = int(mediator.wait_for("listening")["port"])
    metrics_port = int(mediator.wait_for("metrics")["port"])
    before = _scrape(metrics_port)
    assert before["p2psc_mediator_waiting"] == 0
    assert before['p2psc_mediator_limit{limit="max_pending_per_ip"}'] == 2
    assert before["p2psc_mediator_open_fds"] > 0
    _pair(port)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(5)]
    try:
        deadline = time.monotonic() + 10
        while True:
            after = _scrape(metrics_port)
            evicted = after.get('p2psc_mediator_evictions_total{cause="pending_origin"}', 0)
            if evicted >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert evicted == 3
        assert after["p2psc_mediator_unverified"] == 2
        assert after["p2psc_mediator_pairings_total"] == 1
        assert after["p2psc_mediator_registrations_total"] == 1
        assert after["p2psc_mediator_introductions_total"] == 1
    finally:
        for sock in idle:
            sock.close()


def test_listens_on_every_family_and_counts_ipv6_per_prefix() -> None:
    """The adapter binds its own listening sockets (one per family for host ""), and an IPv6
    client is counted under its /64 (spec/mediator.md 6.1)."""
    import asyncio

    from p2psc.aio.mediator import serve_mediator

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")

    async def body() -> None:
        async with serve_mediator("::1", 0) as server:
            _, writer = await asyncio.open_connection("::1", server.port)
            deadline = asyncio.get_running_loop().time() + 5
            while server.core.pending != 1:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            assert server.core._pending_by_ip == {"::/64": 1}
            writer.close()
        async with serve_mediator("", 0) as server:
            families = {listener.family for listener in server._listeners}
            assert socket.AF_INET in families

    asyncio.run(asyncio.wait_for(body(), 20))
