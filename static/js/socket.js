// One Socket.IO connection per page, with the page's auth payload. Reconnects on its own;
// onStatus hears "connecting" | "live" | "reconnecting" so pages can say so.
import { io } from "../vendor/socket.io-4.8.4.esm.min.js";

export function connectSocket(auth, onStatus = () => {}) {
  const socket = io({ auth, transports: ["websocket", "polling"], reconnectionDelayMax: 5000 });
  onStatus("connecting");
  socket.on("connect", () => onStatus("live"));
  socket.on("disconnect", () => onStatus("reconnecting"));
  socket.io.on("reconnect_attempt", () => onStatus("reconnecting"));
  // The server drops events beyond a per-socket limit and says so (docs/realtime.md).
  socket.on("rate_limited", ({ retry_after_ms }) => console.warn(`socket events dropped; next in ${retry_after_ms} ms`));
  return socket;
}

// emit with an acknowledgement, as a promise of the server's {ok, error} reply.
export function request(socket, event, data = {}) {
  return socket.timeout(10000).emitWithAck(event, data).catch(
    () => ({ ok: false, code: "timeout", error: "" }));
}
