"""Sans-IO protocol core: no sockets, no asyncio, no clock (time is a parameter)."""
