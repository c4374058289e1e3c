// The patient's join page: visit time in their own time zone, camera and microphone
// preview with help when they are blocked, and Join, which hands over to the visit
// session (lobby, then call) on this same page.
import { browserToUse, canCall, describeMediaError, openPreview, stopStream, watchLevel } from "../js/media.js";
import { fill } from "../js/format.js";

const data = JSON.parse(document.getElementById("join-data").textContent);
const S = data.strings;
const $ = (id) => document.getElementById(id);
// The phone's clock may be off; the server's time decides when the waiting room opens.
const clockOffsetMs = Date.now() - Date.parse(data.server_time);

let stream = null;
// Why the camera or microphone did not start (describeMediaError's kind: "denied",
// "no_device", ...), null when both did or nobody asked yet; the visit session shows it.
let problemKind = null;
let stopLevel = () => {};
let joining = false;
// Set by the visit session while this tab is in the visit ("joined", or "left" the
// call): a reload then goes straight back there, without another tap.
const stageKey = `vv-visit-stage:${data.appointment_id}:${data.participant_id}`;

function savedStage() {
  try {
    return sessionStorage.getItem(stageKey);
  } catch {
    return null; // storage off (private mode): Join as usual
  }
}

function setStatus(text) {
  $("preview-status").textContent = text;
}

function showProblem(error) {
  const described = describeMediaError(error, S);
  problemKind = described.kind;
  const box = $("media-problem");
  box.dataset.kind = described.kind;
  if (described.browser) box.dataset.browser = described.browser;
  $("media-problem-title").textContent = described.title;
  $("media-problem-text").textContent = described.message;
  const help = $("media-problem-help");
  help.textContent = described.help || "";
  help.hidden = !described.help;
  $("media-help-all").hidden = described.kind !== "denied";
  box.hidden = false;
  setStatus(described.title);
}

function showLevel(level) {
  $("preview-level").value = level;
}

// One preview at a time: Join pressed while the preview is still starting waits for it,
// rather than opening a second camera stream that nobody would stop.
let previewing = null;

function startPreview() {
  previewing = previewing || openCameraAndMicrophone().finally(() => { previewing = null; });
  return previewing;
}

async function openCameraAndMicrophone() {
  $("media-problem").hidden = true;
  problemKind = null;
  $("preview-start").disabled = true;
  setStatus(S.preview_starting);
  stopLevel();
  try {
    stream = await openPreview($("preview"), { audio: true, video: true, previous: stream });
    setStatus(S.preview_on);
  } catch (error) {
    stream = null;
    if (error.name === "NotFoundError") {
      // No camera (a desktop without a webcam): a visit by sound alone still works.
      try {
        stream = await openPreview($("preview"), { audio: true, video: false });
        problemKind = "no_device";
        setStatus(S.audio_only);
      } catch (audioError) {
        showProblem(audioError);
      }
    } else {
      showProblem(error);
    }
  }
  $("preview-start").disabled = false;
  const live = Boolean(stream);
  document.body.dataset.preview = live ? (stream.getVideoTracks().length ? "video" : "audio") : "off";
  // After a failure the problem box has its own "Try again"; one button is enough.
  $("preview-start").hidden = live || !$("media-problem").hidden;
  $("level-row").hidden = !(live && stream.getAudioTracks().length);
  if (live) stopLevel = watchLevel(stream, showLevel);
  showConsequence();
  return live;
}

// Before Join: what the care team will miss if the patient joins like this.
function showConsequence() {
  const video = Boolean(stream && stream.getVideoTracks().length);
  const audio = Boolean(stream && stream.getAudioTracks().length);
  const box = $("media-consequence");
  box.textContent = !video && !audio ? S.join_without_both
    : !video ? S.join_without_camera : !audio ? S.join_without_microphone : "";
  box.hidden = !box.textContent;
}

// No WebRTC (some in-app and old browsers): the waiting room still works, the call would
// not, so say before Join which browser to use instead.
function warnIfNoCalls() {
  if (canCall()) return;
  $("no-webrtc-title").textContent = S.no_webrtc_title;
  $("no-webrtc-text").textContent = fill(S.no_webrtc, { browser: browserToUse(S) });
  $("no-webrtc").hidden = false;
}

function openWaitingRoom() {
  const button = $("join-button");
  button.disabled = false;
  button.textContent = S.join;
  button.removeAttribute("aria-describedby");
  const note = $("lobby-closed");
  if (note) note.hidden = true;
  $("announcer").textContent = S.lobby_now_open;
}

function watchOpening() {
  if (data.lobby_open) return;
  const opensAt = Date.parse(data.lobby_opens_at);
  // A timer of hours may never fire on a sleeping phone; checking often is cheap.
  const timer = setInterval(() => {
    if (Date.now() - clockOffsetMs >= opensAt) {
      clearInterval(timer);
      openWaitingRoom();
    }
  }, 5000);
}

// `left`: back after a reload in a tab that had left the call; the camera stays off
// until Rejoin.
async function join({ left = false } = {}) {
  if (joining) return;
  joining = true;
  const button = $("join-button");
  button.disabled = true;
  button.textContent = S.joining;
  if (!stream && !left) await startPreview();
  stopLevel();
  try {
    const { startVisitSession } = await import("../js/visit_session.js");
    $("prejoin").hidden = true;
    document.body.dataset.stage = "visit";
    startVisitSession({ data, localStream: stream, stageKey, left, mediaProblem: problemKind });
  } catch (error) {
    $("prejoin").hidden = false;
    $("join-error").textContent = S.join_failed;
    $("join-error").hidden = false;
    button.disabled = false;
    button.textContent = S.join;
    joining = false;
  }
}

async function permissionsGranted() {
  if (!navigator.permissions || !navigator.permissions.query) return false;
  try {
    const states = await Promise.all(["camera", "microphone"].map(
      (name) => navigator.permissions.query({ name }).then((status) => status.state)));
    return states.every((state) => state === "granted");
  } catch {
    return false; // Firefox and older Safari do not know these names
  }
}

warnIfNoCalls();
watchOpening();
// The waiting room is open: connect now (the visit is joined only by Join), so Join does
// not wait for the connection's handshake.
if (data.lobby_open && canCall()) import("../js/socket.js").then(({ warmUp }) => warmUp());
$("preview-start").addEventListener("click", startPreview);
$("media-retry").addEventListener("click", startPreview);
$("join-button").addEventListener("click", () => join());
window.addEventListener("pagehide", () => { stopLevel(); if (!joining) stopStream(stream); });
// Handlers attached: from now on a tap is ours. One the page's inline script kept while
// this module loaded is acted on now.
$("join-button").dataset.ready = "true";
const resumeStage = data.lobby_open ? savedStage() : null;
if (resumeStage) {
  // Reloaded in the waiting room or the call: straight back in.
  join({ left: resumeStage === "left" });
} else if ($("join-button").dataset.queued) {
  join();
} else {
  // Allowed before (a returning patient): show the picture at once, no button to find.
  permissionsGranted().then((granted) => { if (granted && !stream) startPreview(); });
}
