"""Sans-IO protocol cores: deterministic state, events in, actions out.

Nothing here imports asyncio, socket, time or random: time arrives as ``now`` arguments,
randomness from an injected source, bytes as events. Adapters in :mod:`p2psc.aio` and
:mod:`p2psc.sync` execute the actions.
"""
