"""Fan-out of committed events: in-process by default, Redis for scale-out (later)."""

from tether.server.broker.memory import SERVER_CLOSING, Broker, Overflowed, ServerClosing, Subscription

__all__ = ["SERVER_CLOSING", "Broker", "Overflowed", "ServerClosing", "Subscription"]
