// One Socket.IO connection per page, with the page's auth payload. Reconnects on its own;
// onStatus hears "connecting" | "live" | "reconnecting" so pages can say so.
import { io } from "../vendor/socket.io-4.8.4.esm.min.js";

export function connectSocket(auth, onStatus = () => {}) {
  const socket = io({ auth, transports: ["websocket", "polling"], reconnectionDelayMax: 5000 });
  onStatus("connecting");
  socket.on("connect", () => onStatus("live"));
  socket.on("disconnect", () => onStatus("reconnecting"));
  socket.io.on("reconnect_attempt", () => onStatus("reconnecting"));
  return socket;
}

// emit with an acknowledgement, as a promise of the server's {ok, error} reply.
export function request(socket, event, data = {}) {
  return socket.timeout(10000).emitWithAck(event, data).catch(
    () => ({ ok: false, error: "timeout" }));
}
