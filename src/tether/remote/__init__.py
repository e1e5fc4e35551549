"""The remote session client: attach to a session from a terminal (docs/protocol.md §13)."""
