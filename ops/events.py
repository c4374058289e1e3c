"""Socket.IO events every page may use."""
from __future__ import annotations

import time

from extensions import socketio
from ops.payloads import expects


@socketio.on("ping_server")
@expects()
def ping_server(_data):
    """Sent by any page to measure the socket round trip; the ack carries server time (ms)."""
    return {"server_time_ms": int(time.time() * 1000)}
