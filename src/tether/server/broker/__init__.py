"""Fan-out of committed events: in-process by default, Redis for scale-out (later)."""

from tether.server.broker.memory import Broker, Overflowed, Subscription

__all__ = ["Broker", "Overflowed", "Subscription"]
