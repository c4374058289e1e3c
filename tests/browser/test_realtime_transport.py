"""Socket.IO must reach the browser over a real WebSocket under gevent, not long-polling."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

CONNECT_AND_PING = """async () => {
  const { io } = await import("/static/vendor/socket.io-4.8.4.esm.min.js");
  const socket = io({ transports: ["polling", "websocket"], upgrade: true });
  await new Promise((resolve, reject) => {
    socket.on("connect_error", reject);
    if (socket.io.engine && socket.io.engine.transport.name === "websocket") resolve();
    socket.io.engine.on("upgrade", () => resolve());
  });
  const started = performance.now();
  const reply = await socket.timeout(5000).emitWithAck("ping_server", {});
  const result = { transport: socket.io.engine.transport.name,
                   roundTripMs: performance.now() - started, reply };
  socket.disconnect();
  return result;
}"""


def test_socket_upgrades_to_websocket_and_round_trips(live_app, page):
    page.goto(live_app.url + "/")

    result = page.evaluate(CONNECT_AND_PING)

    assert result["transport"] == "websocket"
    assert result["reply"]["server_time_ms"] > 0
    assert result["roundTripMs"] < 1000


def test_socket_connects_with_websocket_only(live_app, page):
    page.goto(live_app.url + "/")

    transport = page.evaluate("""async () => {
      const { io } = await import("/static/vendor/socket.io-4.8.4.esm.min.js");
      const socket = io({ transports: ["websocket"] });
      await new Promise((resolve, reject) => {
        socket.on("connect", resolve);
        socket.on("connect_error", reject);
      });
      const name = socket.io.engine.transport.name;
      socket.disconnect();
      return name;
    }""")

    assert transport == "websocket"
