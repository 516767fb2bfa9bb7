"""p2psc under trio (``pip install p2psc[trio]``): the same sans-IO cores, a trio adapter each.

- :func:`connect` pairs with a peer through a Mediator and returns a :class:`TrioConnection`,
  a ``trio.abc.HalfCloseableStream`` over the Noise channel;
- :func:`serve_mediator` runs a Mediator (version 1, and version 0 unless ``legacy=False``);
- :func:`run_negotiator` runs the protocol Negotiator over any trio stream.

Built from spec/embedding.md alone; no asyncio anywhere in this package.
"""

try:
    import trio as _trio  # noqa: F401  (only to explain a missing install)
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError("p2psc.trio needs trio: pip install 'p2psc[trio]'") from missing

from p2psc.trio.connect import TrioConnection, connect, connect_with
from p2psc.trio.mediator import MediatorServer, serve_mediator
from p2psc.trio.negotiator import Handler, RunResult, run_negotiator
from p2psc.trio.stream import SecureStream

__all__ = [
    "Handler",
    "MediatorServer",
    "RunResult",
    "SecureStream",
    "TrioConnection",
    "connect",
    "connect_with",
    "run_negotiator",
    "serve_mediator",
]
