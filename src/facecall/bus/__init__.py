"""Message routing to devices and presence: in-process by default, Redis for scale-out."""

from facecall.bus.base import Bus, Listener, Replay
from facecall.bus.memory import InProcessBus

__all__ = ["Bus", "InProcessBus", "Listener", "Replay"]
