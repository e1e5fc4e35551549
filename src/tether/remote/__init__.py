"""The remote session client: attach to a session from a terminal (reference §7)."""
