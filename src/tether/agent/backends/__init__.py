"""Model backends: ``anthropic`` (the Messages API) and ``scripted`` (offline, deterministic)."""

from tether.agent.backends.base import ModelBackend, ModelError, ModelRequest, ModelStream

__all__ = ["ModelBackend", "ModelError", "ModelRequest", "ModelStream"]
