"""The resolver pipeline: small stages sharing one interface (see :mod:`.base`)."""
