// One Socket.IO connection per page, with the page's auth payload. Reconnects on its own;
// onStatus hears "connecting" | "live" | "reconnecting" so pages can say so.
import { Manager, io } from "../vendor/socket.io-4.8.4.esm.min.js";

const OPTIONS = { transports: ["websocket"], reconnectionDelayMax: 5000 };
let warm = null;

// Open the page's connection to the server before the person acts (the join page, while
// they look at their picture): on a slow network its handshake is a round trip they then
// do not wait for. Nothing happens on the server until connectSocket sends the auth (the
// namespace's connect): no presence, no waiting room.
export function warmUp() {
  warm = warm || new Manager(OPTIONS);
}

export function connectSocket(auth, onStatus = () => {}) {
  // WebSocket only: one connection stays on one server process, so several processes
  // behind a proxy need no sticky sessions (long-polling's requests would each need the
  // same process). socket.io-client 4.8 never fell back to polling here anyway.
  // A manager's socket connects by itself (autoConnect), at once when warm.
  const socket = warm ? warm.socket("/", { auth }) : io({ auth, ...OPTIONS });
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
