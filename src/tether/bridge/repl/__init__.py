"""The in-process REPL bridge (docs/protocol.md §12): remote control switched on from inside an
interactive session, for any front end (:class:`~tether.bridge.repl.frontend.FrontEnd`)."""

from tether.bridge.repl.controller import RemoteControl
from tether.bridge.repl.core import InitFailed, ReplBridgeCore
from tether.bridge.repl.frontend import BridgeInfo, FrontEnd, ReplBridgeConfig, ReplBridgeOptions

__all__ = ["BridgeInfo", "FrontEnd", "InitFailed", "RemoteControl", "ReplBridgeConfig", "ReplBridgeCore",
           "ReplBridgeOptions"]
