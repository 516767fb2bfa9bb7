"""asyncio adapters: thin drivers that move bytes between sockets and the sans-IO cores."""
