"""asyncio adapters: thin drivers that move bytes between sockets and the sans-IO cores."""

from p2psc.aio.connect import P2PConnection, connect
from p2psc.aio.mediator import MediatorServer, run_mediator, serve_mediator

__all__ = ["MediatorServer", "P2PConnection", "connect", "run_mediator", "serve_mediator"]
