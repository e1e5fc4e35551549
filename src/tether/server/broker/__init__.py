"""Fan-out of committed events: in-process by default, Redis for scale-out (later)."""

from tether.server.broker.items import (
    REVOKED,
    SERVER_CLOSING,
    WORK_QUEUED,
    ClientItem,
    InboundItem,
    Live,
    Revoked,
    ServerClosing,
    SessionClosed,
    Topic,
    WorkItem,
    WorkQueued,
    client_topic,
    delivery_frame,
    inbound_topic,
    work_topic,
)
from tether.server.broker.memory import Broker, Overflowed, Subscription

__all__ = ["REVOKED", "SERVER_CLOSING", "WORK_QUEUED", "Broker", "ClientItem", "InboundItem", "Live", "Overflowed",
           "Revoked", "ServerClosing", "SessionClosed", "Subscription", "Topic", "WorkItem", "WorkQueued",
           "client_topic", "delivery_frame", "inbound_topic", "work_topic"]
