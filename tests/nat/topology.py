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
- ``inbound``: ``"drop"`` (an input-hook rule ``iifname WAN ct state new drop``, as typical home
  routers behave) or ``"rst"`` (no rule: Linux answers an unsolicited SYN to a closed port with a
  RST).

Names: every namespace is ``p2nat-<pid>-<tag>-<role>`` and every veth starts with ``<tag>``, so
concurrent runs never collide; ``sweep_stale()`` removes namespaces of our prefix whose creating
process is gone (a run killed before its teardown). ``Topology`` is a context manager whose exit
kills what still runs inside its namespaces and deletes them, also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
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
LAN_BASE = "198.18"
REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable
PEER_SCRIPT = str(Path(__file__).resolve().parent / "netns_peer.py")
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
            f'        iifname "{self.wan_if}" ct state new drop\n' if self.inbound == "drop" else ""
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

    def conntrack(self) -> str:
        """This router's conntrack table, from /proc when available (for failure messages)."""
        with contextlib.suppress(TopologyError):
            return run(["ip", "netns", "exec", self.netns, "cat", "/proc/net/nf_conntrack"])
        return "(conntrack table not available)"


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
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    namespaces: list[str] = field(default_factory=list)
    routers: list[Router] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    _public: Host | None = None
    _links: int = 0
    _public_hosts: int = 0
    _lan_hosts: dict[int, int] = field(default_factory=dict)

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
        """Delete every namespace of this topology (hosts first); safe to call twice."""
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
        self._public = Host("public", netns, MEDIATOR_ADDR, MEDIATOR_ADDR)

    # ----------------------------------------------------------------- public API

    def add_public_host(self, role: str) -> Host:
        """A host directly on the public segment (no NAT)."""
        self._public_hosts += 1
        addr = f"{PUBLIC_NET}.{100 + self._public_hosts}"
        netns = self._netns(role)
        inside, outside = self._veth(netns, self.public.netns, f"{self.tag}eth")
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
    ) -> Router:
        """A router with a WAN leg on the public segment and an empty LAN bridge."""
        index = len(self.routers) + 1
        netns = self._netns(role)
        wan_if = f"{self.tag}wan"
        wan, outside = self._veth(netns, self.public.netns, wan_if)
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
)


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
    raise ValueError(f"unknown scenario {scenario!r}")


@contextlib.contextmanager
def scenario(name: Scenario) -> Iterator[tuple[Topology, Host, Host]]:
    """Build one scenario in a fresh topology; tear it down afterwards, whatever happens."""
    with Topology() as topo:
        a, b = build_scenario(topo, name)
        yield topo, a, b
