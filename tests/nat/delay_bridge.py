"""A userspace delay/loss bridge between two interfaces of one network namespace (issue 13).

Why: the test kernel has no ``sch_netem`` (``tc qdisc add ... netem`` fails with "Specified
qdisc kind is unknown"), so added latency and loss are made here instead. The topology
(``tests/nat/topology.py``, ``Link``) puts this process in a middle namespace that owns two veth
ends with no IP address (and IPv6 disabled, so its kernel sends nothing of its own). It reads
every frame arriving on one end with an ``AF_PACKET`` raw socket and writes it to the other end
``--delay`` seconds later, dropping a ``--loss`` fraction chosen by a seeded RNG. Frames go
through unchanged, so the two sides see one Ethernet segment with a slow, lossy wire in the
middle.

- Address resolution (ARP, IPv6 neighbour discovery) crosses at once, never delayed or lost, and
  takes no draw of the RNG (counted as ``resolution``): the delay and loss stand for the WAN
  path beyond the router, while resolution happens on the router's own link. Letting the bridge
  drop ARP made a router now and then lose all three of its probes for the next hop and answer
  the host's SYN with ICMP host unreachable (``EHOSTUNREACH``, a pairing failed with
  MediatorUnreachable in CI; at 50 % loss, 7 connects of 12), a failure the WAN it emulates
  cannot produce.

- ``PACKET_VNET_HDR`` on both sockets: each frame is read and written with the kernel's
  ``virtio_net_hdr`` in front. veth offloads checksums and segmentation, so a frame read plainly
  carries no finished TCP checksum (or is a 64 KiB GSO frame); passing the header back on write
  lets the kernel finish both, so the receiver sees valid packets.
- ``--match ADDR`` (repeatable): delay and loss apply only to IP frames from or to one of these
  addresses; everything else passes at once ("this host is far from the Mediator, near its
  partner").
- Bounded: at most ``--max-frames`` frames and ``--max-bytes`` bytes wait per direction; a frame
  over either bound is dropped (counted), so a flood cannot grow memory.
- Always ends: after ``--lifetime`` seconds (a hard maximum, also when nobody stops it), on
  SIGTERM or SIGINT. Frames still queued then are dropped.

Output on stdout, one JSON object per line: ``{"ready": true}`` once both sockets are bound, and
at exit ``{"matched": .., "resolution": .., "forwarded": .., "lost": .., "overflow": ..,
"errors": .., "queued": .., "reason": ..}`` (counts over both directions; ``matched``: frames
subject to delay and loss, each of which took exactly one draw of the RNG; ``resolution``:
address resolution frames passed at once; ``reason``: ``lifetime`` or ``signal``).
"""

from __future__ import annotations

import argparse
import heapq
import ipaddress
import json
import random
import select
import signal
import socket
import sys
import time
from typing import Any

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_OUTGOING = 4
VNET_HDR = 10
"""Bytes of ``struct virtio_net_hdr`` in front of every frame with PACKET_VNET_HDR."""
READ_BURST = 64
"""Frames read from one socket before looking at the queue again."""


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def open_port(ifname: str) -> socket.socket:
    """A raw packet socket on ``ifname`` that reads and writes frames with a vnet header."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


ICMPV6 = 58
NEIGHBOUR_DISCOVERY = range(133, 138)
"""ICMPv6 router/neighbour solicitation and advertisement, redirect (RFC 4861)."""


def is_resolution(frame: bytes) -> bool:
    """An ARP frame or an IPv6 neighbour discovery message (no extension headers: the kernel
    sends ND without them), after the vnet header."""
    eth = VNET_HDR
    kind = frame[eth + 12 : eth + 14]
    if kind == b"\x08\x06":
        return True
    ip = eth + 14
    return (
        kind == b"\x86\xdd"
        and len(frame) > ip + 40
        and frame[ip + 6] == ICMPV6
        and frame[ip + 40] in NEIGHBOUR_DISCOVERY
    )


def addresses_of(frame: bytes) -> tuple[bytes, bytes] | None:
    """Source and destination address bytes of an IPv4/IPv6 frame (after the vnet header)."""
    eth = VNET_HDR
    if len(frame) < eth + 14:
        return None
    kind = frame[eth + 12 : eth + 14]
    ip = eth + 14
    if kind == b"\x08\x00" and len(frame) >= ip + 20:
        return frame[ip + 12 : ip + 16], frame[ip + 16 : ip + 20]
    if kind == b"\x86\xdd" and len(frame) >= ip + 40:
        return frame[ip + 8 : ip + 24], frame[ip + 24 : ip + 40]
    return None


class Bridge:
    """Two ports, one heap of frames due for sending, bounded per direction."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.ports = (open_port(args.left), open_port(args.right))
        self.delay = args.delay
        self.loss = args.loss
        self.rng = random.Random(args.seed)
        self.max_frames = args.max_frames
        self.max_bytes = args.max_bytes
        self.match = {ipaddress.ip_address(a).packed for a in args.match}
        self.queue: list[tuple[float, int, int, bytes]] = []  # due, seq, out port, frame
        self.frames = [0, 0]
        self.bytes = [0, 0]
        self.seq = 0
        self.counts = {
            "matched": 0,
            "resolution": 0,
            "forwarded": 0,
            "lost": 0,
            "overflow": 0,
            "errors": 0,
        }

    def _delayed(self, frame: bytes) -> bool:
        if is_resolution(frame):
            self.counts["resolution"] += 1
            return False
        if not self.match:
            return True
        addrs = addresses_of(frame)
        return addrs is not None and (addrs[0] in self.match or addrs[1] in self.match)

    def take(self, inbound: int, now: float) -> None:
        """Read what one port has (bounded burst) and queue it for the other port."""
        sock = self.ports[inbound]
        out = 1 - inbound
        for _ in range(READ_BURST):
            try:
                frame, addr = sock.recvfrom(VNET_HDR + 65536)
            except (BlockingIOError, InterruptedError):
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            due = now
            if self._delayed(frame):
                self.counts["matched"] += 1
                if self.loss and self.rng.random() < self.loss:
                    self.counts["lost"] += 1
                    continue
                due = now + self.delay
            if self.frames[out] >= self.max_frames or self.bytes[out] + len(frame) > self.max_bytes:
                self.counts["overflow"] += 1
                continue
            self.frames[out] += 1
            self.bytes[out] += len(frame)
            self.seq += 1
            heapq.heappush(self.queue, (due, self.seq, out, frame))

    def send_due(self, now: float) -> float | None:
        """Write every frame that is due; return when the next one is, or None."""
        while self.queue and self.queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(self.queue)
            self.frames[out] -= 1
            self.bytes[out] -= len(frame)
            try:
                self.ports[out].send(frame)
                self.counts["forwarded"] += 1
            except OSError:
                self.counts["errors"] += 1
        return self.queue[0][0] if self.queue else None

    def run(self, lifetime: float) -> str:
        """Forward until ``lifetime`` passes or a signal arrives (``Stopped``)."""
        end = time.monotonic() + lifetime
        try:
            while (now := time.monotonic()) < end:
                due = self.send_due(now)
                wait = end - now if due is None else max(0.0, min(due, end) - now)
                readable, _, _ = select.select(self.ports, [], [], wait)
                now = time.monotonic()
                for sock in readable:
                    self.take(self.ports.index(sock), now)
        except Stopped:
            return "signal"
        return "lifetime"


class Stopped(Exception):
    """Raised by the SIGTERM/SIGINT handler (select() would otherwise sleep on, PEP 475)."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--left", required=True, help="one interface")
    parser.add_argument("--right", required=True, help="the other interface")
    parser.add_argument("--delay", type=float, default=0.0, help="one-way delay, seconds")
    parser.add_argument("--loss", type=float, default=0.0, help="fraction dropped, 0..1")
    parser.add_argument("--seed", type=int, default=0, help="seed of the loss RNG")
    parser.add_argument("--match", action="append", default=[], help="delay only this IP's")
    parser.add_argument("--max-frames", type=int, default=4096, help="queued per direction")
    parser.add_argument("--max-bytes", type=int, default=8 << 20, help="queued per direction")
    parser.add_argument("--lifetime", type=float, default=300.0, help="hard maximum, seconds")
    args = parser.parse_args(argv)
    if not (0.0 <= args.loss <= 1.0 and 0.0 <= args.delay <= 10.0 and args.lifetime > 0):
        parser.error("need 0 <= loss <= 1, 0 <= delay <= 10 s, lifetime > 0")

    def stop(signum: int, frame: object) -> None:
        raise Stopped

    bridge = Bridge(args)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    emit({"ready": True})
    reason = bridge.run(args.lifetime)
    emit({**bridge.counts, "queued": len(bridge.queue), "reason": reason})


if __name__ == "__main__":
    main()
