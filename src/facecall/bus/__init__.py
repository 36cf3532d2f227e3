"""Message routing to devices and presence: in-process by default, Redis for scale-out."""

from facecall.bus.base import (
    IN_PROGRESS,
    AnnouncementHandler,
    Bus,
    Kicker,
    Listener,
    LockTimeout,
    Replay,
)
from facecall.bus.memory import InProcessBus

__all__ = ["IN_PROGRESS", "AnnouncementHandler", "Bus", "InProcessBus", "Kicker", "Listener", "LockTimeout",
           "Replay"]
