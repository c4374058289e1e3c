// Chat in the visit, on the patient's page and the provider's: the server says who may
// write and who reads (visits/chat.py); this shows what arrives, in order, with
// textContent only, and sends what the person types. The provider's page may download
// what it has as a text file (chat is not part of the medical record).
import { request } from "./socket.js";
import { clockTime } from "./format.js";

// `me`: this person's participant id; `nameOf(message)`: how the page names a sender.
export function startChat({ socket, me, nameOf, lang, timeZone, transcript = false }) {
  const S = JSON.parse(document.getElementById("chat-strings").textContent);
  const $ = (id) => document.getElementById(id);
  const root = $("chat");
  const log = $("chat-log");
  const seen = new Set();
  const messages = []; // in time order
  let canSend = false;
  let shown = false;

  const label = (message) => (message.participant_id === me ? S.you
    : nameOf(message) || message.name || S[message.role] || message.role);
  const when = (message) => clockTime(message.at, lang, timeZone);

  function add(message) {
    if (seen.has(message.id)) return; // a reply and a push, or history after a push
    seen.add(message.id);
    let index = messages.length;
    while (index > 0 && messages[index - 1].at > message.at) index -= 1;
    messages.splice(index, 0, message);
    const item = document.createElement("div");
    item.className = message.participant_id === me ? "chat-message mine" : "chat-message";
    item.setAttribute("data-testid", "chat-message");
    item.dataset.role = message.role;
    const who = document.createElement("span");
    who.className = "chat-who";
    who.textContent = label(message);
    const at = document.createElement("time");
    at.className = "chat-at";
    at.dateTime = message.at;
    at.textContent = when(message);
    const text = document.createElement("p");
    text.className = "chat-text";
    text.textContent = message.text;
    item.append(who, at, text);
    log.insertBefore(item, log.children[index] || null);
    log.scrollTop = log.scrollHeight;
    $("chat-empty").hidden = true;
    render();
  }

  async function loadHistory() {
    const reply = await request(socket, "chat_history");
    if (reply.ok) for (const message of reply.messages) add(message);
  }

  function render() {
    // Waiting people see the chat once a provider has written to them.
    root.hidden = !shown || (!canSend && !messages.length);
    $("chat-form").hidden = !canSend && !transcript;
    $("chat-input").disabled = !canSend;
    $("chat-send").disabled = !canSend;
    $("chat-hint").textContent = canSend ? S.hint : (transcript ? S.ended_hint : S.wait_to_write);
    $("chat-transcript").hidden = !transcript;
  }

  $("chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("chat-input");
    if (!canSend || !input.value.trim()) return;
    $("chat-error").hidden = true;
    $("chat-send").disabled = true;
    const reply = await request(socket, "chat_send", { text: input.value });
    $("chat-send").disabled = !canSend;
    if (!reply.ok) {
      $("chat-error").textContent = reply.error || S.failed;
      $("chat-error").hidden = false;
      return;
    }
    input.value = "";
    add(reply.message);
    input.focus();
  });

  function transcriptText() {
    const lines = [S.transcript_title, S.transcript_notice, ""];
    for (const message of messages) lines.push(`[${when(message)}] ${label(message)}: ${message.text}`);
    return `${lines.join("\n")}\n`;
  }

  $("chat-transcript").addEventListener("click", () => {
    const url = URL.createObjectURL(new Blob([transcriptText()], { type: "text/plain;charset=utf-8" }));
    const link = document.createElement("a");
    link.href = url;
    link.download = `${S.transcript_file}.txt`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });

  socket.on("chat_message", add);
  socket.on("connect", loadHistory); // again after a reconnect: what was missed meanwhile
  if (socket.connected) loadHistory();

  return {
    // The chat shows while the visit is on (`on`); the person writes when `writable`.
    show(on, writable) {
      shown = on;
      canSend = on && writable;
      render();
    },
    // The visit ended: its messages are deleted on the server; the page forgets them too.
    clear() {
      messages.length = 0;
      seen.clear();
      log.replaceChildren();
      $("chat-empty").hidden = false;
      this.show(false, false);
    },
    transcriptText,
  };
}
