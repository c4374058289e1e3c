// A patient's (or guest's) visit after they press Join: the waiting room, then the call.
// The server pushes `lobby_state` (waiting | admitted | ended); this page only reflects
// it, so reloading or losing the network and coming back lands in the same place.
import { connectSocket } from "./socket.js";
import { Call, bindCallControls } from "./call.js";
import { duration, fill } from "./format.js";

const readJson = (id) => JSON.parse(document.getElementById(id).textContent);

export function startVisitSession({ data, localStream }) {
  const S = readJson("lobby-strings");
  const callStrings = readJson("call-strings");
  const lobby = document.getElementById("lobby");
  const callRoot = document.getElementById("call");
  const $ = (id) => document.getElementById(id);
  let lobbyState = null;
  let clockOffsetMs = 0;
  let call = null;

  lobby.hidden = false;
  $("lobby-title").focus();
  $("lobby-preview").srcObject = localStream || null;
  const stopMeter = startMicMeter(localStream, $("mic-level"));

  const socket = connectSocket({ patient: true }, (status) => {
    $("lobby-connection").textContent = status === "reconnecting" ? S.reconnecting : "";
  });

  socket.on("lobby_state", (state) => {
    lobbyState = state;
    clockOffsetMs = Date.now() - Date.parse(state.server_time);
    render(state);
    if (state.state === "admitted" && !call) startCall();
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
    $("lobby-note").hidden = !state.note || state.state !== "waiting";
    $("lobby-note").textContent = state.note ? fill(S.note, { note: state.note }) : "";
    tick();
  }

  function tick() {
    if (!lobbyState || !lobbyState.waiting_since || lobbyState.state !== "waiting") return;
    const waited = Date.now() - clockOffsetMs - Date.parse(lobbyState.waiting_since);
    $("lobby-waited").textContent = duration(waited);
  }
  const ticker = setInterval(tick, 1000);

  async function startCall() {
    clearInterval(ticker);
    stopMeter();
    lobby.hidden = true;
    callRoot.hidden = false;
    call = new Call({
      socket, localStream, root: callRoot, strings: callStrings,
      onState: (_state, message) => { $("call-status").textContent = message || ""; },
    });
    bindCallControls(call, callRoot, callStrings);
    await call.join();
  }

  function finish() {
    clearInterval(ticker);
    stopMeter();
    if (call && call.state !== "ended") call.end("ended");
    if (call) {
      // Keep the call card for its "ended" state; the lobby card says goodbye.
      lobby.hidden = false;
    }
    for (const track of localStream?.getTracks() || []) track.stop();
  }

  return { socket };
}

// A live microphone level (0..1) in a <meter>, so people can check they are heard while
// they wait. Returns a function that stops it.
function startMicMeter(stream, meter) {
  const track = stream?.getAudioTracks()[0];
  if (!track || !window.AudioContext) return () => {};
  const audio = new AudioContext();
  const analyser = audio.createAnalyser();
  analyser.fftSize = 512;
  audio.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  let frame = 0;
  const draw = () => {
    analyser.getFloatTimeDomainData(samples);
    let peak = 0;
    for (const value of samples) peak = Math.max(peak, Math.abs(value));
    meter.value = Math.min(1, peak * 2);
    frame = requestAnimationFrame(draw);
  };
  draw();
  return () => {
    cancelAnimationFrame(frame);
    audio.close();
  };
}
