// The provider's visit page: renders the visit's live state from the server's
// `visit_state` pushes, and sends admit / admit all / end visit. A patient arriving in
// the lobby is announced by sound and a desktop notification (alerts: on from the first
// click anywhere on the page, which browsers require before sound; the provider may turn
// them off), the tab title, a screen-reader announcement and, inside an EHR frame where
// the tab title cannot be seen, a banner that stays until someone acts on it.
import { connectSocket, request } from "../js/socket.js";
import { clockTime, duration, fill } from "../js/format.js";
import { Call, bindCallControls } from "../js/call.js";
import { startChat } from "../js/chat.js";

const data = JSON.parse(document.getElementById("visit-data").textContent);
const S = data.strings;
const lang = document.documentElement.lang || "en";
const $ = (id) => document.getElementById(id);

let snapshot = data.snapshot;
let clockOffsetMs = Date.now() - Date.parse(snapshot.server_time);
let knownWaiting = new Set(snapshot.lobby.map((entry) => entry.participant_id));
let audio = null;
let call = null; // the provider's Call while they are in it
// True while the camera prompt is open: renders (an admit brings several) must not
// re-enable Join call, or a second click would open a second camera stream.
let joining = false;
let arrivalText = ""; // what the live region last said about arrivals
const ALERTS_KEY = "vv-alerts"; // "off" once the provider turned alerts off, in this browser
const framed = window.top !== window;
let alertsWanted = readAlertsChoice();
let alertsUnlocked = false; // after the first click or key press on this page

function nameOf(participant) {
  if (participant.display_name) return participant.display_name;
  return data.patient_names[participant.id] || S[participant.role] || participant.role;
}

function presenceText(participant) {
  const label = S[`presence_${participant.presence}`] || S[participant.presence] || participant.presence;
  if (!participant.presence_since || participant.presence === "never") return label;
  return `${label} ${fill(S.since, { time: clockTime(participant.presence_since, lang, data.time_zone) })}`;
}

function renderParticipants() {
  const list = $("participant-list");
  list.replaceChildren(...snapshot.participants.map((p) => {
    const item = document.createElement("li");
    item.dataset.testid = "participant";
    item.setAttribute("data-testid", "participant");
    item.dataset.role = p.role;
    item.dataset.presence = p.presence;
    item.dataset.participantId = p.id;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = nameOf(p) + (p.id === data.me ? ` (${S.you})` : "");
    const role = document.createElement("span");
    role.className = "role";
    role.textContent = S[p.role] || p.role;
    const state = document.createElement("span");
    state.className = "state";
    state.textContent = presenceText(p);
    if (p.admitted && (p.role === "patient" || p.role === "guest")) {
      role.textContent += ` · ${S.admitted}`;
    }
    item.append(who, role, state);
    const media = mediaBadge(p);
    if (media) item.append(media);
    if (p.device_test) {
      // The latest device test, so the care team can call ahead when it failed.
      const badge = document.createElement("span");
      badge.className = `device-test device-test-${p.device_test.overall}`;
      badge.setAttribute("data-testid", "participant-device-test");
      badge.dataset.status = p.device_test.overall;
      badge.textContent = fill(S.device_test, { status: S[`device_test_${p.device_test.overall}`] });
      item.append(badge);
    }
    return item;
  }));
}

// Their camera and microphone as their page says (on, off/muted, blocked, unavailable),
// while they are connected: a black tile or silence then has a reason the provider can
// read out.
function mediaBadge(p) {
  if (!p.media || p.id === data.me || !["connected", "reconnecting"].includes(p.presence)) return null;
  const badge = document.createElement("span");
  badge.className = "media-state";
  badge.setAttribute("data-testid", "participant-media");
  badge.dataset.camera = p.media.camera;
  badge.dataset.microphone = p.media.microphone;
  const part = (device, value) => {
    const piece = document.createElement("span");
    if (["blocked", "unavailable"].includes(value)) piece.className = "media-problem";
    piece.textContent = S[`${device}_${value}`] || value;
    return piece;
  };
  badge.append(part("camera", p.media.camera), document.createTextNode(" · "),
               part("microphone", p.media.microphone));
  if (p.media.webrtc === false) {
    // Their browser cannot make calls: their page told them which one to use instead.
    badge.dataset.webrtc = "false";
    const piece = document.createElement("span");
    piece.className = "media-problem";
    piece.textContent = S.no_webrtc;
    badge.append(document.createTextNode(" · "), piece);
  }
  return badge;
}

function renderLobby() {
  const byId = new Map(snapshot.participants.map((p) => [p.id, p]));
  const waiting = snapshot.ended ? [] : snapshot.lobby;
  $("lobby-list").replaceChildren(...waiting.map((entry) => {
    const participant = byId.get(entry.participant_id) || { id: entry.participant_id, role: entry.role };
    const item = document.createElement("li");
    item.dataset.participantId = entry.participant_id;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = nameOf(participant);
    const waited = document.createElement("span");
    waited.className = "state waited";
    waited.dataset.enteredAt = entry.entered_at;
    const admit = document.createElement("button");
    admit.type = "button";
    admit.setAttribute("data-testid", "admit");
    admit.textContent = S.admit;
    admit.setAttribute("aria-label", fill(S.admit_who, { name: nameOf(participant) }));
    admit.addEventListener("click", () => admitAndJoin("admit", { participant_id: entry.participant_id }));
    item.append(who, waited, admit);
    return item;
  }));
  $("lobby-count").textContent = String(waiting.length);
  $("lobby-empty").hidden = waiting.length > 0;
  $("admit-all").hidden = waiting.length < 2;
  document.querySelector(".lobby-card").classList.toggle("has-waiting", waiting.length > 0);
  document.title = waiting.length ? `(${waiting.length}) ${fill(S.waiting_title, { count: waiting.length })} · ${data.title}` : data.title;
  tickWaitTimes();
}

function tickWaitTimes() {
  const now = Date.now() - clockOffsetMs;
  for (const el of document.querySelectorAll(".waited")) {
    el.textContent = fill(S.waiting_for, { duration: duration(now - Date.parse(el.dataset.enteredAt)) });
  }
}

function renderEnded() {
  $("ended-banner").hidden = !snapshot.ended;
  // "Live" is about this page's connection; next to "This visit has ended" it reads as
  // if the visit were still on.
  $("connection-text").parentElement.hidden = snapshot.ended;
  for (const id of ["end-visit", "admit-all"]) $(id).disabled = snapshot.ended;
  $("join-call").disabled = snapshot.ended || call !== null || joining;
}

function render() {
  renderParticipants();
  renderLobby();
  renderEnded();
  // After the end the page keeps what it has (the server deleted it): the transcript.
  chat.show(true, !snapshot.ended);
}

function announceArrivals() {
  const waitingNow = new Set(snapshot.lobby.map((entry) => entry.participant_id));
  const arrived = [...waitingNow].filter((id) => !knownWaiting.has(id));
  knownWaiting = waitingNow;
  if (snapshot.ended || !waitingNow.size) {
    // Nobody waits any more (admitted, gone, or the visit ended): a screen reader must
    // not find "… is waiting" in the live region later.
    clearArrivals();
  }
  if (!arrived.length || snapshot.ended) return;
  const byId = new Map(snapshot.participants.map((p) => [p.id, p]));
  arrivalText = arrived.map((id) => fill(S.arrived, { name: nameOf(byId.get(id) || { id, role: "patient" }) })).join(". ");
  $("announcer").textContent = arrivalText;
  if (framed) showBanner(arrivalText);
  if (!alertsOn()) return;
  chime();
  // Only when the provider may not be looking at this page (another window or tab).
  const away = document.visibilityState !== "visible" || !document.hasFocus();
  if ("Notification" in window && Notification.permission === "granted" && away) {
    // No names on the desktop: a notification may show on a shared screen.
    new Notification(S.notification_title, { body: S.notification_body, tag: `visit-${data.appointment_id}` });
  }
}

// --- alerts: on after the first click, with a visible on/off state ---------------------
function readAlertsChoice() {
  try { return localStorage.getItem(ALERTS_KEY) !== "off"; } catch { return true; }
}

function alertsOn() {
  return alertsWanted && alertsUnlocked;
}

function renderAlerts() {
  const on = alertsOn();
  $("alerts").setAttribute("aria-pressed", String(on));
  $("alerts-state").textContent = on ? S.alerts_on : S.alerts_off;
  // Before the first click the page's own hint stands ("turn on with your first click").
  if (alertsUnlocked || !alertsWanted) $("alerts-hint").textContent = on ? S.alerts_hint_on : S.alerts_hint_off;
}

// Sound may start and notifications be asked for only in answer to a click or key press.
function unlockAlerts() {
  if (alertsUnlocked) return;
  alertsUnlocked = true;
  try {
    audio = audio || new AudioContext();
    audio.resume().catch(() => {});
  } catch (error) {
    console.warn("sound unavailable", error);
  }
  if ("Notification" in window && Notification.permission === "default") {
    Notification.requestPermission().catch(() => {});
  }
}

function onFirstGesture(event) {
  document.removeEventListener("click", onFirstGesture, true);
  document.removeEventListener("keydown", onFirstGesture, true);
  unlockAlerts();
  // A first click on the toggle itself is the toggle's to decide (it turns them on).
  if (!$("alerts").contains(event.target)) renderAlerts();
}

function setAlertsWanted(wanted) {
  alertsWanted = wanted;
  try {
    if (wanted) localStorage.removeItem(ALERTS_KEY);
    else localStorage.setItem(ALERTS_KEY, "off");
  } catch { /* storage off: the choice lasts for this page */ }
  renderAlerts();
}

function showBanner(text) {
  $("arrival-banner-text").textContent = text;
  $("arrival-banner").hidden = false;
}

function hideBanner() {
  $("arrival-banner").hidden = true;
}

function chime() {
  try {
    audio = audio || new AudioContext();
    if (audio.state === "suspended") audio.resume();
    const t = audio.currentTime;
    for (const [offset, freq] of [[0, 880], [0.18, 1175]]) {
      const osc = audio.createOscillator(), gain = audio.createGain();
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, t + offset);
      gain.gain.exponentialRampToValueAtTime(0.3, t + offset + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + offset + 0.3);
      osc.connect(gain).connect(audio.destination);
      osc.start(t + offset);
      osc.stop(t + offset + 0.32);
    }
  } catch (error) {
    console.warn("chime unavailable", error);
  }
}

function clearArrivals() {
  hideBanner();
  // Only our own words: a later "Copied" or "note saved" stays.
  if (arrivalText && $("announcer").textContent === arrivalText) $("announcer").textContent = "";
  arrivalText = "";
}

async function act(event, payload = {}) {
  $("action-error").hidden = true;
  const reply = await request(socket, event, payload);
  if (!reply.ok) {
    $("action-error").textContent = reply.error || S.action_failed;
    $("action-error").hidden = false;
  }
  return reply;
}

// Admitting someone means seeing them: a provider who is not in the call joins it (the
// click is the gesture the browser wants before it opens the camera).
async function admitAndJoin(event, payload = {}) {
  const reply = await act(event, payload);
  if (!reply.ok) return;
  clearArrivals();
  if (!call && !joining && !snapshot.ended) joinCall();
}

function setConnection(status) {
  const text = $("connection-text");
  text.dataset.state = status;
  text.textContent = S[status] || status;
  text.parentElement.classList.toggle("live", status === "live");
}

const socket = connectSocket({ visit: data.appointment_id }, setConnection);
// The visit's chat, with the transcript download; senders named as in the lists above.
const chat = startChat({
  socket, me: data.me, lang, timeZone: data.time_zone, transcript: true,
  nameOf: (message) => {
    const person = snapshot.participants.find((p) => p.id === message.participant_id);
    return person ? nameOf(person) : null;
  },
});
socket.on("visit_state", (next) => {
  snapshot = next;
  clockOffsetMs = Date.now() - Date.parse(next.server_time);
  render();
  announceArrivals();
});
// One participant's presence changed (connected, reconnecting, disconnected): patch the
// picture instead of waiting for a whole new one.
socket.on("presence", async (delta) => {
  const person = snapshot.participants.find((p) => p.id === delta.participant_id);
  if (!person) {
    // Someone this page has not seen yet: ask for the whole picture.
    const reply = await request(socket, "get_visit_state");
    if (reply.ok) snapshot = reply.state;
  } else {
    person.presence = delta.presence;
    person.presence_since = delta.since;
    const kept = snapshot.lobby.find((entry) => entry.participant_id === delta.participant_id);
    const lobby = snapshot.lobby.filter((entry) => entry.participant_id !== delta.participant_id);
    if (delta.presence !== "disconnected") {
      if (delta.lobby_entered_at) {
        lobby.push({ participant_id: person.id, role: person.role, entered_at: delta.lobby_entered_at });
      } else if (kept) {
        lobby.push(kept);
      }
    }
    lobby.sort((a, b) => Date.parse(a.entered_at) - Date.parse(b.entered_at));
    snapshot.lobby = lobby;
  }
  render();
  announceArrivals();
});
// A participant's camera or microphone changed (or their page told a provider who just
// arrived).
socket.on("participant_media", (delta) => {
  const person = snapshot.participants.find((p) => p.id === delta.participant_id);
  if (!person) return;
  person.media = { camera: delta.camera, microphone: delta.microphone, webrtc: delta.webrtc,
                   at: delta.at };
  renderParticipants();
});
socket.on("connect_error", (error) => {
  if (error.message === "not_authorized") setConnection("reconnecting");
});

$("admit-all").addEventListener("click", () => admitAndJoin("admit_all"));
$("end-visit").addEventListener("click", () => {
  if (window.confirm(S.confirm_end)) act("end_visit");
});
document.addEventListener("click", onFirstGesture, true);
document.addEventListener("keydown", onFirstGesture, true);
$("alerts").addEventListener("click", () => {
  unlockAlerts();
  setAlertsWanted(!alertsOn());
});
$("arrival-banner-ok").addEventListener("click", () => {
  hideBanner();
  $("lobby-title").scrollIntoView({ block: "start" });
});

$("join-call").addEventListener("click", () => joinCall());

async function joinCall() {
  if (call || joining) return;
  joining = true;
  $("join-call").disabled = true;
  let stream = null;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  } catch (error) {
    $("action-error").textContent = S.camera_needed;
    $("action-error").hidden = false;
    joining = false;
    renderEnded();
    return;
  }
  joining = false;
  const root = $("call");
  const callStrings = JSON.parse($("call-strings").textContent);
  root.hidden = false;
  call = new Call({
    socket, localStream: stream, root, strings: callStrings,
    onState: (state, message) => {
      $("call-status").textContent = message || "";
      if (state === "ended") {
        for (const track of stream.getTracks()) track.stop();
        $("join-call").disabled = snapshot.ended;
        call = null;
      }
    },
  });
  bindCallControls(call, root, callStrings);
  if (await call.join()) root.scrollIntoView({ block: "start" });
}

$("note-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const reply = await request(socket, "set_lobby_note", { text: $("note-text").value });
  $("announcer").textContent = reply.ok ? S.note_saved : "";
  if (!reply.ok) { $("action-error").textContent = reply.error || S.action_failed; $("action-error").hidden = false; }
});

$("add-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const reply = await request(socket, "add_participant", {
    role: $("add-role").value, display_name: $("add-name").value, phone: $("add-phone").value });
  if (!reply.ok) { $("action-error").textContent = reply.error || S.action_failed; $("action-error").hidden = false; return; }
  $("action-error").hidden = true;
  $("invite").hidden = false;
  const texted = $("invite-texted");
  texted.hidden = reply.texted === undefined;
  texted.textContent = reply.texted ? S.texted : (reply.text_error || "");
  texted.className = reply.texted ? "" : "error";
  $("invite-link").value = reply.link;
  $("invite-link").focus();
  $("invite-link").select();
  $("add-name").value = "";
  $("add-phone").value = "";
});

$("copy-invite").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("invite-link").value);
  } catch {
    $("invite-link").select();
    document.execCommand("copy");
  }
  $("announcer").textContent = S.copied;
  $("copy-invite").textContent = S.copied;
});

render();
renderAlerts();
setInterval(tickWaitTimes, 1000);
