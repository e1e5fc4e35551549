"""Tether: an open, self-hostable remote control for coding agents."""

__version__ = "0.1.0"
