"""What each participant's page says of its camera and microphone, for the staff's picture.

Kept in memory on the process that holds the participant's socket, and pushed to the
visit's staff as ``participant_media`` when it changes. A page sends it again with every
``lobby_state`` it hears (a provider arriving is one), so a provider whose page is served
by another process hears it too; a staff snapshot built on another process may show it
as unknown until then. Nothing is stored: it is a live fact, like presence.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# What a page may say (visits/events.py checks it).
CAMERA_STATES = ("on", "off", "blocked", "unavailable")
MICROPHONE_STATES = ("on", "muted", "off", "blocked", "unavailable")


@dataclass(frozen=True)
class MediaState:
    """One participant's camera and microphone as their page last said."""

    participant_id: int
    camera: str
    microphone: str
    at: datetime
    # False when their browser has no WebRTC: the call cannot start there, whatever the
    # camera and microphone do, and the provider needs to know why.
    webrtc: bool = True

    def as_dict(self) -> dict:
        return {"camera": self.camera, "microphone": self.microphone,
                "webrtc": self.webrtc, "at": self.at.isoformat()}


_states: dict[int, MediaState] = {}


def record(participant_id: int, camera: str, microphone: str, now: datetime,
           webrtc: bool = True) -> MediaState:
    """Keep what a page said; returns it."""
    state = MediaState(participant_id, camera, microphone, now, webrtc)
    _states[participant_id] = state
    return state


def state_of(participant_id: int) -> MediaState | None:
    return _states.get(participant_id)


def forget(participant_id: int) -> None:
    """Their disconnect is final: nothing to show until their page says so again."""
    _states.pop(participant_id, None)
