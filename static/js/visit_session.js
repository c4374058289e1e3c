// A patient's (or guest's) visit after they press Join: the waiting room, then the call.
// The server pushes `lobby_state` (waiting | admitted | ended); this page only reflects
// it, so reloading or losing the network and coming back lands in the same place.
// Where this tab was (in the visit, or left the call) is kept in sessionStorage under
// `stageKey`, so the join page can come back here by itself after a reload.
import { connectSocket } from "./socket.js";
import { Call, bindCallControls } from "./call.js";
import { openPreview, stopStream } from "./media.js";
import { duration, fill } from "./format.js";

const readJson = (id) => JSON.parse(document.getElementById(id).textContent);

function remember(key, stage) {
  if (!key) return;
  try {
    if (stage) sessionStorage.setItem(key, stage);
    else sessionStorage.removeItem(key);
  } catch { /* storage off (private mode): a reload then asks for Join again */ }
}

// `left`: this tab had left the call before a reload; wait for Rejoin instead of calling.
export function startVisitSession({ data, localStream, stageKey = null, left = false }) {
  const S = readJson("lobby-strings");
  const callStrings = readJson("call-strings");
  const lobby = document.getElementById("lobby");
  const callRoot = document.getElementById("call");
  const $ = (id) => document.getElementById(id);
  let lobbyState = null;
  let clockOffsetMs = 0;
  let call = null;
  let stream = localStream || null;
  let hasLeft = left;
  let ended = false;

  remember(stageKey, hasLeft ? "left" : "joined");
  lobby.hidden = false;
  $("lobby-title").focus();
  $("lobby-preview").srcObject = stream;
  let stopMeter = startMicMeter(stream, $("mic-level"));

  const socket = connectSocket({ patient: true }, (status) => {
    $("lobby-connection").textContent = status === "reconnecting" ? S.reconnecting : "";
  });

  socket.on("lobby_state", (state) => {
    lobbyState = state;
    clockOffsetMs = Date.now() - Date.parse(state.server_time);
    render(state);
    if (state.state === "admitted" && !call) {
      if (hasLeft) showLeft();
      else startCall();
    }
    if (state.state === "ended") finish();
  });

  function render(state) {
    lobby.dataset.state = state.state;
    const titles = { waiting: S.waiting_title, admitted: S.admitted_title, ended: S.ended_title };
    $("lobby-title").textContent = titles[state.state];
    if (state.state === "waiting") {
      $("lobby-status").textContent = state.provider_present ? S.provider_knows : S.told;
    } else {
      $("lobby-status").textContent = state.state === "admitted" ? S.admitted : S.ended;
    }
    const waiting = state.state === "waiting";
    // The wait time, the camera check and the note only mean something while waiting.
    lobby.querySelector(".lobby-waited").hidden = !waiting;
    lobby.querySelector(".lobby-check").hidden = !waiting;
    $("lobby-note").hidden = !state.note || !waiting;
    $("lobby-note").textContent = state.note ? fill(S.note, { note: state.note }) : "";
    tick();
  }

  function tick() {
    if (!lobbyState || !lobbyState.waiting_since || lobbyState.state !== "waiting") return;
    const waited = Date.now() - clockOffsetMs - Date.parse(lobbyState.waiting_since);
    $("lobby-waited").textContent = duration(waited);
  }
  const ticker = setInterval(tick, 1000);

  function stopLobbyMedia() {
    clearInterval(ticker);
    stopMeter();
    $("lobby-preview").srcObject = null;
  }

  // Camera and microphone again after leaving (they were released): sound only when
  // there is no camera, nothing at all when both are refused (others still see and hear
  // nothing from us, but we see and hear them).
  async function reopenMedia() {
    try {
      return await openPreview(null, { audio: true, video: true });
    } catch (error) {
      if (error.name !== "NotFoundError") return null;
      try {
        return await openPreview(null, { audio: true, video: false });
      } catch {
        return null;
      }
    }
  }

  async function startCall() {
    stopLobbyMedia();
    lobby.hidden = true;
    callRoot.hidden = false;
    $("call-rejoin").hidden = true;
    if (!stream || stream.getTracks().every((track) => track.readyState === "ended")) {
      stream = await reopenMedia();
      if (ended) { stopStream(stream); return; } // the visit ended meanwhile
    }
    const current = new Call({
      socket, localStream: stream, root: callRoot, strings: callStrings,
      onState: (state, message) => {
        $("call-status").textContent = message || "";
        if (state === "ended" && current.endReason === "left") onLeft();
      },
    });
    call = current;
    bindCallControls(current, callRoot, callStrings);
    await current.join();
  }

  // "Leave call": the camera and microphone are released, and Rejoin is offered while
  // the visit is open.
  function onLeft() {
    hasLeft = true;
    stopStream(stream);
    stream = null;
    remember(stageKey, "left");
    showLeft();
  }

  function showLeft() {
    stopLobbyMedia();
    if (ended || !lobbyState || lobbyState.state !== "admitted") return;
    lobby.hidden = true;
    callRoot.hidden = false;
    callRoot.dataset.state = "ended";
    $("call-status").textContent = callStrings.you_left;
    $("call-rejoin").hidden = false;
    $("rejoin").focus(); // "Leave call" is gone: the one thing left to do
  }

  $("rejoin").addEventListener("click", () => {
    if (ended || (call && call.state !== "ended")) return;
    hasLeft = false;
    remember(stageKey, "joined");
    $("call-title").focus(); // the Rejoin button is about to be hidden
    startCall();
  });

  function finish() {
    ended = true;
    stopLobbyMedia();
    if (call && call.state !== "ended") call.end("ended");
    $("call-rejoin").hidden = true;
    if (call || hasLeft) {
      // The call card keeps its "ended" state, out of sight: the lobby card says goodbye,
      // once.
      callRoot.dataset.state = "ended";
      $("call-status").textContent = callStrings.visit_ended;
      callRoot.hidden = true;
      lobby.hidden = false;
      $("lobby-title").focus();
    }
    stopStream(stream);
    stream = null;
    remember(stageKey, null);
  }

  return { socket };
}

// A live microphone level (0..1) in a <meter>, so people can check they are heard while
// they wait. Returns a function that stops it (once; later calls do nothing).
function startMicMeter(stream, meter) {
  const track = stream?.getAudioTracks()[0];
  if (!track || !window.AudioContext) return () => {};
  const audio = new AudioContext();
  const analyser = audio.createAnalyser();
  analyser.fftSize = 512;
  audio.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  let frame = 0;
  let stopped = false;
  const draw = () => {
    analyser.getFloatTimeDomainData(samples);
    let peak = 0;
    for (const value of samples) peak = Math.max(peak, Math.abs(value));
    meter.value = Math.min(1, peak * 2);
    frame = requestAnimationFrame(draw);
  };
  draw();
  return () => {
    if (stopped) return;
    stopped = true;
    cancelAnimationFrame(frame);
    meter.value = 0;
    audio.close().catch(() => {});
  };
}
