"""Throw-away NAT topologies in Linux network namespaces, for the NAT traversal tests.

Why namespaces: a NAT is kernel behaviour (conntrack, masquerade, what a router does with an
unsolicited SYN). Simulating it in Python would test our model of a NAT, not a NAT. Here every
router is a namespace running real nftables masquerade, and every host a namespace whose sockets
go through it.

Layout (all addresses are reserved for testing and documentation, nothing leaves the namespaces):

    public namespace  br0 203.0.113.1/24  (the mediator host; a bridge = the "internet" segment)
      |-- public host k     203.0.113.(100+k)/24          (no NAT)
      |-- router k   WAN    203.0.113.(10+k)/24  (nftables masquerade, policy for inbound SYNs)
            LAN bridge 198.18.k.1/24
              |-- host j    198.18.k.(10+j)/24, route to 203.0.113.0/24 via 198.18.k.1

No namespace has a default route: a router knows only its LAN and the public /24, a host behind
it only its LAN and the public /24 via the router, the public namespace only the public /24.

Router variants (``Router``):
- ``masquerade``: ``"preserve"`` (nftables ``masquerade``, which keeps the source port when it is
  free) or ``"random-fully"`` (``masquerade random-fully``: a fresh random port per connection, so
  the port the mediator observes is useless to anyone else).
- ``idle_timeout``: seconds conntrack keeps an idle *established* TCP entry in this router
  (``net.netfilter.nf_conntrack_tcp_timeout_established``, per namespace; Linux's default is
  five days, home and carrier-grade routers commonly use minutes). When it passes, the
  router forgets the mapping and drops what arrives for it (issue 13, keepalive).
- ``inbound``: ``"drop"`` (an input-hook rule ``iifname WAN ct state invalid,new drop``, as
  typical home routers behave) or ``"rst"`` (no rule: Linux answers an unsolicited SYN to a closed
  port with a RST). ``invalid`` too, because conntrack marks some segments of a simultaneous
  open invalid (a retransmitted SYN from the partner after our SYN-ACK left), and an invalid
  segment is not translated back, so it reaches the router's own stack, which has no socket
  on that port and answers RST: the partner's attempt failed, and so did every new one, until
  the punch gave up (the loss-3 pairing failed this way in CI once a SYN-ACK was lost).

Names: every namespace is ``p2nat-<pid>-<tag>-<role>`` and every veth starts with ``<tag>``, so
concurrent runs never collide; ``sweep_stale()`` removes namespaces of our prefix whose creating
process is gone (a run killed before its teardown). ``Topology`` is a context manager whose exit
kills what still runs inside its namespaces and deletes them, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

PREFIX = "p2nat-"
PUBLIC_NET = "203.0.113"
MEDIATOR_ADDR = f"{PUBLIC_NET}.1"
TRANSIT_NET = "198.51.100"
PUBLIC_NET6 = "2001:db8:0"
MEDIATOR_ADDR6 = f"{PUBLIC_NET6}::1"
LAN_BASE = "198.18"
REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable
PEER_SCRIPT = str(Path(__file__).resolve().parent / "netns_peer.py")
BRIDGE_SCRIPT = str(Path(__file__).resolve().parent / "delay_bridge.py")
CMD_TIMEOUT = 15.0

Masquerade = Literal["preserve", "random-fully"]
Inbound = Literal["drop", "rst"]


class TopologyError(RuntimeError):
    """A command that builds or inspects the topology failed (with its stderr)."""


def missing_requirements() -> str | None:
    """Why the namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "network-namespace NAT tests need root (ip netns, nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"network-namespace NAT tests need `{tool}` (apt-get install iproute2 nftables)"
    return None


def run(argv: Sequence[str], *, input: str | None = None, timeout: float = CMD_TIMEOUT) -> str:
    """Run one command, return its stdout; raise TopologyError with stderr when it fails."""
    try:
        done = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise TopologyError(f"{' '.join(argv)}: timed out after {timeout}s") from exc
    if done.returncode != 0:
        raise TopologyError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def list_namespaces() -> list[str]:
    """Names of all network namespaces (``ip netns list`` prints ``name (id: N)`` or ``name``)."""
    return [line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(netns: str) -> None:
    """SIGKILL the processes still running in one of our namespaces (by pid, never by name)."""
    with contextlib.suppress(TopologyError):
        for text in run(["ip", "netns", "pids", netns]).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(text), signal.SIGKILL)


def delete_namespace(netns: str) -> None:
    """Kill what runs inside, then delete the namespace (its veths and bridges go with it)."""
    _kill_inside(netns)
    with contextlib.suppress(TopologyError):
        run(["ip", "netns", "del", netns])


def sweep_stale() -> list[str]:
    """Delete namespaces of our prefix left behind by runs whose process no longer exists."""
    removed = []
    for name in list_namespaces():
        if not name.startswith(PREFIX):
            continue
        pid_text = name[len(PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and _pid_alive(int(pid_text)):
            continue  # a concurrent run of ours: not stale
        delete_namespace(name)
        removed.append(name)
    return removed


@dataclass(frozen=True)
class Host:
    """A namespace with one address; ``public_addr`` is what the public segment sees of it."""

    role: str
    netns: str
    addr: str
    public_addr: str
    router: Router | None = None

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` inside this namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(self, argv: Sequence[str], *, timeout: float = CMD_TIMEOUT) -> str:
        """Run a command inside this namespace and return its stdout."""
        return run(self.argv(argv), timeout=timeout)

    def python(self, args: Sequence[str]) -> list[str]:
        """Command line running the project's Python inside this namespace."""
        return self.argv([PYTHON, *args])

    def peer_script(self, args: Sequence[str]) -> list[str]:
        """Command line running tests/nat/netns_peer.py inside this namespace."""
        return self.python([PEER_SCRIPT, *args])

    def popen(self, argv: Sequence[str], *, stdin: bool = False) -> subprocess.Popen[str]:
        """Start a process inside this namespace, with pipes for stdout and stderr (and for
        stdin with ``stdin=True``: the gate of ``helpers.start_in_order``)."""
        return subprocess.Popen(
            self.argv(argv),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)},
        )


@dataclass(frozen=True)
class Router:
    """A masquerading router namespace between a LAN bridge and the public segment."""

    role: str
    netns: str
    index: int
    wan_addr: str
    lan_addr: str
    wan_if: str
    masquerade: Masquerade
    inbound: Inbound
    idle_timeout: int | None = None

    def ruleset(self) -> str:
        """The nftables ruleset this router runs (shown in failures and in the README)."""
        random = " fully-random" if self.masquerade == "random-fully" else ""
        drop_in = (
            f'        iifname "{self.wan_if}" ct state invalid,new drop\n'
            if self.inbound == "drop"
            else ""
        )
        return (
            "table ip p2nat {\n"
            "    chain postrouting {\n"
            "        type nat hook postrouting priority srcnat; policy accept;\n"
            f'        oifname "{self.wan_if}" masquerade{random}\n'
            "    }\n"
            "    chain input {\n"
            "        type filter hook input priority filter; policy accept;\n"
            f"{drop_in}"
            "    }\n"
            "    chain forward {\n"
            "        type filter hook forward priority filter; policy accept;\n"
            f'        iifname "{self.wan_if}" ct state new drop\n'
            "    }\n"
            "}\n"
        )

    def ruleset6(self) -> str:
        """The stateful IPv6 firewall of an ``add_firewall6`` router: replies and related
        traffic pass, every new connection from the WAN is dropped (no NAT in IPv6)."""
        return (
            "table ip6 p2fw {\n"
            "    chain forward {\n"
            "        type filter hook forward priority filter; policy accept;\n"
            "        ct state established,related accept\n"
            f'        iifname "{self.wan_if}" drop\n'
            "    }\n"
            "}\n"
        )

    def conntrack(self) -> str:
        """This router's conntrack table, from /proc when available (for failure messages)."""
        with contextlib.suppress(TopologyError):
            return run(["ip", "netns", "exec", self.netns, "cat", "/proc/net/nf_conntrack"])
        return "(conntrack table not available)"


@dataclass(frozen=True)
class Link:
    """Added one-way delay and loss on one link, made by ``delay_bridge.py`` (no netem here).

    The link then runs through a middle namespace ``<role>-d`` whose bridge process copies
    frames between its two veth ends after ``delay`` seconds, dropping a ``loss`` fraction
    (RNG seeded with ``seed``); ``match`` limits both to IP frames from or to those addresses.
    ``lifetime`` bounds the bridge process (it stops by itself then, also if nobody stops it).
    """

    delay: float = 0.0
    loss: float = 0.0
    seed: int = 1
    match: tuple[str, ...] = ()
    lifetime: float = 600.0
    max_frames: int = 4096
    max_bytes: int = 8 << 20

    def argv(self, left: str, right: str) -> list[str]:
        """The bridge's command line between two interfaces of the middle namespace."""
        argv = [PYTHON, BRIDGE_SCRIPT, "--left", left, "--right", right]
        argv += ["--delay", str(self.delay), "--loss", str(self.loss), "--seed", str(self.seed)]
        argv += ["--lifetime", str(self.lifetime), "--max-frames", str(self.max_frames)]
        argv += ["--max-bytes", str(self.max_bytes)]
        for addr in self.match:
            argv += ["--match", addr]
        return argv


@dataclass
class Topology:
    """A set of namespaces built on demand; a context manager that always tears them down.

    ``public`` is the mediator's namespace (``MEDIATOR_ADDR`` on the public bridge).

    ``transit=True`` puts one routed hop between the NATs, as on the internet: each router's
    WAN is then a point-to-point link ``198.51.100.(4k+1)/30 <-> (4k+2)/30`` to the public
    namespace, which forwards. Needed to study low-TTL punching (a SYN that opens its own NAT's
    mapping but expires before it reaches the other NAT); in the default flat layout the other
    NAT is on the same segment, zero hops away.
    """

    transit: bool = False
    v6: bool = False
    """Also give the public segment ``MEDIATOR_ADDR6`` (2001:db8:0::1/64) and forward IPv6
    there: the ``*6`` methods add IPv6-only hosts and stateful-firewall routers (no NAT)."""
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    namespaces: list[str] = field(default_factory=list)
    routers: list[Router] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    _public: Host | None = None
    _links: int = 0
    _public_hosts: int = 0
    _lan_hosts: dict[int, int] = field(default_factory=dict)
    bridges: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    bridge_stats: dict[str, dict[str, object]] = field(default_factory=dict)

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> Topology:
        sweep_stale()
        try:
            self._build_public()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the delay bridges, delete every namespace of this topology (hosts first); safe
        to call twice."""
        for role in list(self.bridges):
            self.stop_bridge(role)
        for netns in reversed(self.namespaces):
            delete_namespace(netns)
        self.namespaces.clear()

    @property
    def public(self) -> Host:
        """The public namespace: the mediator runs here, on ``MEDIATOR_ADDR``."""
        if self._public is None:
            raise TopologyError("topology not entered")
        return self._public

    # ----------------------------------------------------------------- building blocks

    def _netns(self, role: str) -> str:
        name = f"{PREFIX}{os.getpid()}-{self.tag}-{role}"
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self._ip(name, "link", "set", "lo", "up")
        return name

    @staticmethod
    def _ip(netns: str, *args: str) -> str:
        return run(["ip", "-n", netns, *args])

    def _veth(self, ns_a: str, ns_b: str, name_a: str | None = None) -> tuple[str, str]:
        """A veth pair created directly inside two namespaces (never visible in the root one)."""
        self._links += 1
        a = name_a or f"{self.tag}a{self._links}"
        b = f"{self.tag}b{self._links}"
        run(
            [
                "ip",
                "link",
                "add",
                a,
                "netns",
                ns_a,
                "type",
                "veth",
                "peer",
                "name",
                b,
                "netns",
                ns_b,
            ]
        )
        return a, b

    def _wire(
        self, role: str, ns_a: str, ns_b: str, link: Link | None, name_a: str | None = None
    ) -> tuple[str, str]:
        """A veth link between two namespaces, through a delay bridge when ``link`` is given."""
        if link is None:
            return self._veth(ns_a, ns_b, name_a)
        mid = self._netns(f"{role}-d")
        for key in ("all", "default"):  # the middle sends nothing of its own
            run(
                ["ip", "netns", "exec", mid, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1"]
            )
        end_a, left = self._veth(ns_a, mid, name_a)
        right, end_b = self._veth(mid, ns_b)
        # outer ends first, then the middle: a veth gets its carrier when its second end comes
        # up, and the middle's ends must be the second (else the first ARP across it is lost)
        self._ip(ns_a, "link", "set", end_a, "up")
        self._ip(ns_b, "link", "set", end_b, "up")
        for dev in (left, right):
            self._ip(mid, "link", "set", dev, "up")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", mid, *link.argv(left, right)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.bridges[role] = proc
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], CMD_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        if '"ready"' not in line:
            self.stop_bridge(role)
            raise TopologyError(f"delay bridge {role} did not start: {self.bridge_stats[role]}")
        return end_a, end_b

    def stop_bridge(self, role: str) -> dict[str, object]:
        """Stop one delay bridge (SIGTERM, then SIGKILL), reap it, return its counters."""
        proc = self.bridges.pop(role)
        if proc.poll() is None:
            proc.terminate()
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=5)
        stats: dict[str, object] = {"stderr": err[-2000:]}
        for line in out.splitlines():
            if line.startswith("{") and '"ready"' not in line:
                stats.update(json.loads(line))
        self.bridge_stats[role] = stats
        return stats

    def _bridge(self, netns: str, name: str, addr_cidr: str) -> None:
        self._ip(netns, "link", "add", name, "type", "bridge")
        self._ip(netns, "addr", "add", addr_cidr, "dev", name)
        self._ip(netns, "link", "set", name, "up")

    def _attach(self, netns: str, bridge: str, port: str) -> None:
        self._ip(netns, "link", "set", port, "master", bridge)
        self._ip(netns, "link", "set", port, "up")

    def _build_public(self) -> None:
        netns = self._netns("pub")
        self._bridge(netns, "br0", f"{MEDIATOR_ADDR}/24")
        if self.transit:
            run(["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        if self.v6:
            self._ip(netns, "-6", "addr", "add", f"{MEDIATOR_ADDR6}/64", "dev", "br0", "nodad")
            sysctl = "net.ipv6.conf.all.forwarding=1"
            run(["ip", "netns", "exec", netns, "sysctl", "-qw", sysctl])
        self._public = Host("public", netns, MEDIATOR_ADDR, MEDIATOR_ADDR)

    @property
    def mediator_host(self) -> str:
        """The address the Mediator listens on: IPv6 in a ``v6`` topology."""
        return MEDIATOR_ADDR6 if self.v6 else MEDIATOR_ADDR

    # ----------------------------------------------------------------- public API

    def add_public_host(self, role: str, link: Link | None = None) -> Host:
        """A host directly on the public segment (no NAT); ``link``: delay/loss on its wire."""
        self._public_hosts += 1
        addr = f"{PUBLIC_NET}.{100 + self._public_hosts}"
        netns = self._netns(role)
        inside, outside = self._wire(role, netns, self.public.netns, link, f"{self.tag}eth")
        self._attach(self.public.netns, "br0", outside)
        self._ip(netns, "addr", "add", f"{addr}/24", "dev", inside)
        self._ip(netns, "link", "set", inside, "up")
        if self.transit:
            self._ip(netns, "route", "add", f"{TRANSIT_NET}.0/24", "via", MEDIATOR_ADDR)
        host = Host(role, netns, addr, addr)
        self.hosts.append(host)
        return host

    def add_router(
        self,
        role: str,
        *,
        masquerade: Masquerade = "preserve",
        inbound: Inbound = "drop",
        idle_timeout: int | None = None,
        link: Link | None = None,
    ) -> Router:
        """A router with a WAN leg on the public segment and an empty LAN bridge; ``link``:
        delay/loss on the WAN wire."""
        index = len(self.routers) + 1
        netns = self._netns(role)
        wan_if = f"{self.tag}wan"
        wan, outside = self._wire(role, netns, self.public.netns, link, wan_if)
        if self.transit:
            gateway, wan_addr = f"{TRANSIT_NET}.{4 * index + 1}", f"{TRANSIT_NET}.{4 * index + 2}"
            self._ip(self.public.netns, "addr", "add", f"{gateway}/30", "dev", outside)
            self._ip(self.public.netns, "link", "set", outside, "up")
            self._ip(netns, "addr", "add", f"{wan_addr}/30", "dev", wan)
            self._ip(netns, "link", "set", wan, "up")
            for net in (f"{PUBLIC_NET}.0/24", f"{TRANSIT_NET}.0/24"):
                self._ip(netns, "route", "add", net, "via", gateway)
        else:
            self._attach(self.public.netns, "br0", outside)
            wan_addr = f"{PUBLIC_NET}.{10 + index}"
            self._ip(netns, "addr", "add", f"{wan_addr}/24", "dev", wan)
            self._ip(netns, "link", "set", wan, "up")
        lan_addr = f"{LAN_BASE}.{index}.1"
        self._bridge(netns, "lan", f"{lan_addr}/24")
        run(["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        router = Router(
            role, netns, index, wan_addr, lan_addr, wan_if, masquerade, inbound, idle_timeout
        )
        run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=router.ruleset())
        if idle_timeout is not None:  # conntrack is loaded in this namespace by the ruleset
            sysctl = f"net.netfilter.nf_conntrack_tcp_timeout_established={idle_timeout}"
            run(["ip", "netns", "exec", netns, "sysctl", "-qw", sysctl])
        self.routers.append(router)
        self._lan_hosts[index] = 0
        return router

    def add_host(self, role: str, router: Router) -> Host:
        """A host on ``router``'s LAN, reaching the public segment only through it."""
        self._lan_hosts[router.index] += 1
        addr = f"{LAN_BASE}.{router.index}.{10 + self._lan_hosts[router.index]}"
        netns = self._netns(role)
        inside, outside = self._veth(netns, router.netns, f"{self.tag}eth")
        self._attach(router.netns, "lan", outside)
        self._ip(netns, "addr", "add", f"{addr}/24", "dev", inside)
        self._ip(netns, "link", "set", inside, "up")
        self._ip(netns, "route", "add", f"{PUBLIC_NET}.0/24", "via", router.lan_addr)
        if self.transit:
            self._ip(netns, "route", "add", f"{TRANSIT_NET}.0/24", "via", router.lan_addr)
        host = Host(role, netns, addr, router.wan_addr, router)
        self.hosts.append(host)
        return host

    def link_hosts(self, a: Host, b: Host, net: str = "198.19.250") -> tuple[str, str]:
        """A direct link between two hosts (``net``.1 on ``a``, ``net``.2 on ``b``, /24), which
        the Mediator never sees: reachable only through the candidates they advertise."""
        inside_a, inside_b = self._veth(a.netns, b.netns)
        addrs = (f"{net}.1", f"{net}.2")
        for netns, dev, addr in ((a.netns, inside_a, addrs[0]), (b.netns, inside_b, addrs[1])):
            self._ip(netns, "addr", "add", f"{addr}/24", "dev", dev)
            self._ip(netns, "link", "set", dev, "up")
        return addrs

    # ----------------------------------------------------------------- IPv6 (issue 13)

    def add_public_host6(self, role: str, link: Link | None = None) -> Host:
        """An IPv6-only host on the public segment, 2001:db8:0::(100+k)/64."""
        self._public_hosts += 1
        addr = f"{PUBLIC_NET6}::{100 + self._public_hosts}"
        netns = self._netns(role)
        inside, outside = self._wire(role, netns, self.public.netns, link, f"{self.tag}eth")
        self._attach(self.public.netns, "br0", outside)
        self._ip(netns, "-6", "addr", "add", f"{addr}/64", "dev", inside, "nodad")
        self._ip(netns, "link", "set", inside, "up")
        self._ip(netns, "-6", "route", "add", "2001:db8::/32", "via", MEDIATOR_ADDR6)
        host = Host(role, netns, addr, addr)
        self.hosts.append(host)
        return host

    def add_firewall6(self, role: str, link: Link | None = None) -> Router:
        """An IPv6 router (no NAT: every host has a global address) with a stateful firewall:
        ``ct state established,related accept``, anything else arriving on the WAN dropped.
        WAN 2001:db8:0::(10+k)/64 on the public segment, LAN 2001:db8:k::1/64."""
        index = len(self.routers) + 1
        netns = self._netns(role)
        wan_if = f"{self.tag}wan"
        wan, outside = self._wire(role, netns, self.public.netns, link, wan_if)
        self._attach(self.public.netns, "br0", outside)
        wan_addr = f"{PUBLIC_NET6}::{10 + index}"
        self._ip(netns, "-6", "addr", "add", f"{wan_addr}/64", "dev", wan, "nodad")
        self._ip(netns, "link", "set", wan, "up")
        lan_addr = f"2001:db8:{index}::1"
        self._ip(netns, "link", "add", "lan", "type", "bridge")
        self._ip(netns, "-6", "addr", "add", f"{lan_addr}/64", "dev", "lan", "nodad")
        self._ip(netns, "link", "set", "lan", "up")
        self._ip(netns, "-6", "route", "add", "2001:db8::/32", "via", MEDIATOR_ADDR6)
        run(["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        self._ip(self.public.netns, "-6", "route", "add", f"2001:db8:{index}::/64", "via", wan_addr)
        router = Router(role, netns, index, wan_addr, lan_addr, wan_if, "preserve", "drop")
        run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=router.ruleset6())
        self.routers.append(router)
        self._lan_hosts[index] = 0
        return router

    def add_host6(self, role: str, router: Router) -> Host:
        """An IPv6-only host behind ``router``'s firewall: 2001:db8:k::(10+j)/64."""
        self._lan_hosts[router.index] += 1
        addr = f"2001:db8:{router.index}::{10 + self._lan_hosts[router.index]}"
        netns = self._netns(role)
        inside, outside = self._veth(netns, router.netns, f"{self.tag}eth")
        self._attach(router.netns, "lan", outside)
        self._ip(netns, "-6", "addr", "add", f"{addr}/64", "dev", inside, "nodad")
        self._ip(netns, "link", "set", inside, "up")
        self._ip(netns, "-6", "route", "add", "2001:db8::/32", "via", router.lan_addr)
        host = Host(role, netns, addr, addr, router)
        self.hosts.append(host)
        return host

    def describe(self) -> str:
        """Human summary for failure messages: hosts, addresses, router variants."""
        lines = [f"public {self.public.netns} {MEDIATOR_ADDR}"]
        for r in self.routers:
            idle = "" if r.idle_timeout is None else f" idle={r.idle_timeout}s"
            lines.append(
                f"router {r.role} {r.netns} wan={r.wan_addr} {r.masquerade}/{r.inbound}{idle}"
            )
        for h in self.hosts:
            via = f" via {h.router.role}" if h.router else ""
            lines.append(f"host {h.role} {h.netns} {h.addr} public={h.public_addr}{via}")
        return "\n".join(lines)


# --------------------------------------------------------------------- scenarios

Scenario = Literal[
    "no-nat",
    "client-nat",
    "peer-nat",
    "peer-nat-rst",
    "both-nat-drop",
    "both-nat-rst",
    "same-nat",
    "random-fully",
    "delay-150",
    "loss-3",
    "ipv6",
    "far-client",
]
SCENARIOS: tuple[Scenario, ...] = (
    "no-nat",
    "client-nat",
    "peer-nat",
    "peer-nat-rst",
    "both-nat-drop",
    "both-nat-rst",
    "same-nat",
    "random-fully",
    "delay-150",
    "loss-3",
    "ipv6",
    "far-client",
)
DELAY = 0.150
"""One-way delay of ``delay-150`` on the Client router's WAN (as the independent check used)."""
LOSS = 0.03
"""Loss of ``loss-3`` on each router's WAN, each direction."""
FAR, NEAR = 0.150, 0.050
"""``far-client``: one-way delay between the Client and the Mediator only, and on the Peer's
router's WAN (so between the Peer and both others)."""


def scenario_topology(name: Scenario) -> Topology:
    """A fresh (not yet entered) topology fit for scenario ``name`` (IPv6 for ``ipv6``)."""
    return Topology(v6=name == "ipv6")


def build_scenario(topo: Topology, scenario: Scenario) -> tuple[Host, Host]:
    """Add the two hosts (Client side ``a``, Peer side ``b``) of one named scenario.

    ``a`` is meant to register first (the Client), ``b`` second (the Peer).
    """
    if scenario == "no-nat":
        return topo.add_public_host("a"), topo.add_public_host("b")
    if scenario == "client-nat":
        ra = topo.add_router("ra")
        return topo.add_host("a", ra), topo.add_public_host("b")
    if scenario in ("peer-nat", "peer-nat-rst"):
        rb = topo.add_router("rb", inbound="rst" if scenario == "peer-nat-rst" else "drop")
        return topo.add_public_host("a"), topo.add_host("b", rb)
    if scenario in ("both-nat-drop", "both-nat-rst"):
        inbound: Inbound = "drop" if scenario == "both-nat-drop" else "rst"
        ra = topo.add_router("ra", inbound=inbound)
        rb = topo.add_router("rb", inbound=inbound)
        return topo.add_host("a", ra), topo.add_host("b", rb)
    if scenario == "same-nat":
        r = topo.add_router("r")
        return topo.add_host("a", r), topo.add_host("b", r)
    if scenario == "random-fully":
        ra = topo.add_router("ra")
        rb = topo.add_router("rb", masquerade="random-fully")
        return topo.add_host("a", ra), topo.add_host("b", rb)
    if scenario == "delay-150":  # both NATs drop; 150 ms each way on the Client's WAN wire
        ra = topo.add_router("ra", link=Link(delay=DELAY))
        rb = topo.add_router("rb")
        return topo.add_host("a", ra), topo.add_host("b", rb)
    if scenario == "loss-3":  # both NATs drop; each WAN wire loses 3 % each way
        ra = topo.add_router("ra", link=Link(loss=LOSS, seed=1))
        rb = topo.add_router("rb", link=Link(loss=LOSS, seed=2))
        return topo.add_host("a", ra), topo.add_host("b", rb)
    if scenario == "far-client":  # public Client 300 ms (round trip) from the Mediator, 100 ms
        # from the Peer; the Peer behind a dropping NAT 100 ms from both (issue 13, timed dial)
        a = topo.add_public_host("a", link=Link(delay=FAR, match=(MEDIATOR_ADDR,)))
        rb = topo.add_router("rb", link=Link(delay=NEAR))
        return a, topo.add_host("b", rb)
    if scenario == "ipv6":  # stateful IPv6 firewalls, no NAT; the Mediator over IPv6
        if not topo.v6:
            raise ValueError("scenario ipv6 needs Topology(v6=True) (scenario_topology)")
        ra = topo.add_firewall6("ra")
        rb = topo.add_firewall6("rb")
        return topo.add_host6("a", ra), topo.add_host6("b", rb)
    raise ValueError(f"unknown scenario {scenario!r}")


@contextlib.contextmanager
def scenario(name: Scenario) -> Iterator[tuple[Topology, Host, Host]]:
    """Build one scenario in a fresh topology; tear it down afterwards, whatever happens."""
    with scenario_topology(name) as topo:
        a, b = build_scenario(topo, name)
        yield topo, a, b
