"""Thin asyncio adapters: the only place with sockets and ``ssl``."""
