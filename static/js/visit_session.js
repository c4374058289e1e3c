// A patient's (or guest's) visit after they press Join: the waiting room, then the call.
// The server pushes `lobby_state` (waiting | admitted | ended); this page only reflects
// it, so reloading or losing the network and coming back lands in the same place.
// Where this tab was (in the visit, or left the call) is kept in sessionStorage under
// `stageKey`, so the join page can come back here by itself after a reload.
import { connectSocket, request } from "./socket.js";
import { startChat } from "./chat.js";
import { browserFamily, browserToUse, canCall, describeMediaError, openPreview, stopStream } from "./media.js";
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
// `mediaProblem`: why the camera or microphone did not start on the join page
// (describeMediaError's kind), or null.
export function startVisitSession({ data, localStream, stageKey = null, left = false,
                                    mediaProblem = null }) {
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
  let problemKind = mediaProblem;
  let lastReported = ""; // the camera and microphone state last sent, as JSON
  // The call's code is not needed to wait (so not on a slow phone's way to the waiting
  // room); it loads meanwhile, usually long before the admit.
  let callModule = null;
  let startingCall = false;
  const callModuleLoading = import("./call.js").then((module) => { callModule = module; return module; });

  remember(stageKey, hasLeft ? "left" : "joined");
  if (!canCall()) {
    $("lobby-no-webrtc-title").textContent = data.strings.no_webrtc_title;
    $("lobby-no-webrtc-text").textContent = fill(data.strings.no_webrtc,
                                                 { browser: browserToUse(data.strings) });
    $("lobby-no-webrtc").hidden = false;
  }
  lobby.hidden = false;
  $("lobby-title").focus();
  $("lobby-preview").srcObject = stream;
  let stopMeter = startMicMeter(stream, $("mic-level"));

  const socket = connectSocket({ patient: true }, (status) => {
    $("lobby-connection").textContent = status === "reconnecting" ? S.reconnecting : "";
  });
  // Times in the person's own clock; senders named by the server (never a patient's name).
  const chat = startChat({ socket, me: data.participant_id, nameOf: () => null,
                           lang: document.documentElement.lang || "en" });
  watchTracks();
  showMediaWarnings(mediaState()); // sent with the first lobby_state, once connected

  socket.on("lobby_state", (state) => {
    lobbyState = state;
    clockOffsetMs = Date.now() - Date.parse(state.server_time);
    render(state);
    // Waiting people read what a provider writes; people let in write too.
    if (state.state === "ended") chat.clear();
    else chat.show(true, state.state === "admitted");
    // Again on every state: a provider who just opened the visit (perhaps on another
    // server process) hears this person's camera and microphone too.
    reportMedia();
    if (state.state === "admitted" && !call) {
      if (!canCall()) return; // render() said which browser to use instead
      if (hasLeft) showLeft();
      else startCall();
    }
    if (state.state === "ended") finish();
  });
  // This person opened the visit in another tab or on another device, which has it now
  // (the server disconnects this socket right after).
  socket.on("replaced", showReplaced);

  function render(state) {
    lobby.dataset.state = state.state;
    const titles = { waiting: S.waiting_title, admitted: S.admitted_title, ended: S.ended_title };
    $("lobby-title").textContent = titles[state.state];
    if (state.state === "waiting") {
      $("lobby-status").textContent = state.provider_present ? S.provider_here : S.not_opened;
    } else {
      $("lobby-status").textContent = state.state === "admitted" ? S.admitted : S.ended;
    }
    if (state.state === "admitted" && !canCall()) {
      $("lobby-status").textContent = fill(data.strings.no_webrtc_admitted,
                                           { browser: browserToUse(data.strings) });
    }
    $("lobby-no-webrtc").hidden = canCall() || state.state !== "waiting";
    const waiting = state.state === "waiting";
    // The wait time, the camera check and the note only mean something while waiting.
    lobby.querySelector(".lobby-waited").hidden = !waiting;
    lobby.querySelector(".lobby-check").hidden = !waiting;
    $("lobby-note").hidden = !state.note || !waiting;
    $("lobby-note").textContent = state.note ? fill(S.note, { note: state.note }) : "";
    tick();
  }

  // Past the start by the endpoint's margin and still waiting: whom to call.
  function showLate() {
    const late = $("lobby-late");
    const due = lobbyState && lobbyState.state === "waiting" && lobbyState.call_clinic_at
      && Date.now() - clockOffsetMs >= Date.parse(lobbyState.call_clinic_at);
    late.hidden = !due;
    if (!due) return;
    const phone = lobbyState.clinic_phone;
    $("lobby-late-text").textContent = phone ? S.late_phone : S.late;
    const link = $("lobby-late-phone");
    link.hidden = !phone;
    link.textContent = phone || "";
    if (phone) link.href = `tel:${phone.replace(/[^0-9+]/g, "")}`;
    else link.removeAttribute("href");
  }

  function tick() {
    showLate();
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
  // nothing from us, but we see and hear them). `problemKind` says why, for the warning.
  async function reopenMedia() {
    const kindOf = (error) => describeMediaError(error, {}).kind;
    try {
      const opened = await openPreview(null, { audio: true, video: true });
      problemKind = null;
      return opened;
    } catch (error) {
      problemKind = kindOf(error);
      if (error.name !== "NotFoundError") return null;
      try {
        const opened = await openPreview(null, { audio: true, video: false });
        problemKind = "no_device";
        return opened;
      } catch (audioError) {
        problemKind = kindOf(audioError);
        return null;
      }
    }
  }

  // --- what the others get of this person's camera and microphone ---------------------
  // camera: on | off | blocked | unavailable; microphone: on | muted | off | blocked |
  // unavailable. "off" for both after leaving the call (released on purpose).
  function mediaState() {
    const liveTrack = (tracks) => tracks.find((track) => track.readyState === "live");
    const camera = liveTrack(stream?.getVideoTracks() || []);
    const microphone = liveTrack(stream?.getAudioTracks() || []);
    const missing = problemKind === "denied" ? "blocked" : "unavailable";
    const released = !stream && !problemKind;
    return {
      camera: camera ? (camera.enabled ? "on" : "off") : (released ? "off" : missing),
      microphone: microphone ? (microphone.enabled ? "on" : "muted")
        : (released ? "off" : missing),
      webrtc: canCall(),
    };
  }

  function reportMedia({ force = true } = {}) {
    const media = mediaState();
    showMediaWarnings(media);
    if (call && call.state !== "ended") {
      callModule.showDeviceAvailability(callRoot, callStrings, stream);
    }
    const key = JSON.stringify(media);
    if (!force && key === lastReported) return;
    lastReported = key;
    request(socket, "report_media", media).catch(() => {});
  }

  // A device unplugged, or its permission taken back, ends its track.
  function watchTracks() {
    for (const track of stream?.getTracks() || []) {
      track.addEventListener("ended", () => reportMedia({ force: false }));
    }
  }

  // "Your care team can't see you" (can't hear, can't see or hear) in the waiting room
  // and the call, with how to allow the camera in this browser when it is blocked.
  function showMediaWarnings(media) {
    const noCamera = media.camera === "blocked" || media.camera === "unavailable";
    const noMicrophone = media.microphone === "blocked" || media.microphone === "unavailable";
    const blocked = media.camera === "blocked" || media.microphone === "blocked";
    const browser = browserFamily();
    const texts = data.strings || {};
    for (const where of ["lobby", "call"]) {
      const shown = !ended && (noCamera || noMicrophone);
      $(`${where}-media-warning`).hidden = !shown;
      if (!shown) continue;
      const box = warningBox(where);
      box.dataset.camera = media.camera;
      box.dataset.microphone = media.microphone;
      box.dataset.browser = browser;
      box.querySelector(".media-warning-title").textContent = noCamera && noMicrophone
        ? callStrings.cant_see_or_hear : noCamera ? callStrings.cant_see : callStrings.cant_hear;
      let text = blocked ? texts.denied : (texts[problemKind] || texts.no_device || "");
      if (where === "call") text = `${text} ${callStrings.retry_in_call}`;
      box.querySelector(".media-warning-text").textContent = text;
      const help = box.querySelector(".media-warning-help");
      help.textContent = blocked ? (texts[`help_${browser}`] || texts.help_chrome || "") : "";
      help.hidden = !help.textContent;
      const all = box.querySelector(".media-warning-all");
      if (all) all.hidden = !blocked;
    }
  }

  // "Try again" in the waiting room: ask once more; the preview and meter follow.
  async function retryInLobby() {
    const fresh = await reopenMedia();
    if (ended) { stopStream(fresh); return; }
    if (fresh) {
      stopMeter();
      stopStream(stream);
      stream = fresh;
      $("lobby-preview").srcObject = stream;
      stopMeter = startMicMeter(stream, $("mic-level"));
      watchTracks();
    }
    reportMedia();
  }

  // "Try again" in the call: leave for a moment and come back with the devices (a new
  // camera cannot join peer connections already made without renegotiating them all).
  async function retryInCall() {
    if (call && call.state !== "ended") await call.leave();
    if (ended || !lobbyState || lobbyState.state !== "admitted") return;
    hasLeft = false;
    remember(stageKey, "joined");
    startCall();
  }

  // The warning's content, from its <template> the first time it is shown.
  function warningBox(where) {
    const box = $(`${where}-media-warning`);
    const template = box.querySelector("template");
    if (template) {
      box.replaceChildren(template.content.cloneNode(true));
      box.querySelector(".media-warning-retry")
        .addEventListener("click", where === "lobby" ? retryInLobby : retryInCall);
    }
    return box;
  }

  async function startCall() {
    if (startingCall) return; // a second "admitted" while the first is still starting
    startingCall = true;
    try {
      await startCallNow();
    } finally {
      startingCall = false;
    }
  }

  async function startCallNow() {
    stopLobbyMedia();
    lobby.hidden = true;
    callRoot.hidden = false;
    $("call-rejoin").hidden = true;
    if (!stream || stream.getTracks().every((track) => track.readyState === "ended")) {
      stream = await reopenMedia();
      if (ended) { stopStream(stream); return; } // the visit ended meanwhile
      watchTracks();
    }
    const { Call, bindCallControls } = callModule || await callModuleLoading;
    if (ended) { stopStream(stream); return; }
    const current = new Call({
      socket, localStream: stream, root: callRoot, strings: callStrings,
      onState: (state, message) => {
        $("call-status").textContent = message || "";
        if (state === "ended" && current.endReason === "left") onLeft();
      },
      onMedia: () => reportMedia({ force: false }),
    });
    call = current;
    bindCallControls(current, callRoot, callStrings);
    reportMedia();
    await current.join();
  }

  // "Leave call": the camera and microphone are released, and Rejoin is offered while
  // the visit is open.
  function onLeft() {
    hasLeft = true;
    stopStream(stream);
    stream = null;
    problemKind = null;
    remember(stageKey, "left");
    reportMedia();
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

  function showReplaced() {
    if (ended) return;
    ended = true; // nothing more happens in this tab
    chat.clear();
    socket.disconnect(); // no reconnecting: that would take the visit back
    stopLobbyMedia();
    if (call && call.state !== "ended") call.end("ended");
    stopStream(stream);
    stream = null;
    callRoot.hidden = true;
    lobby.hidden = false;
    for (const part of [".lobby-waited", ".lobby-check"]) lobby.querySelector(part).hidden = true;
    for (const id of ["lobby-note", "lobby-late", "lobby-connection"]) $(id).hidden = true;
    showMediaWarnings(mediaState());
    $("lobby-title").textContent = S.replaced_title;
    $("lobby-status").textContent = S.replaced;
    $("lobby-replaced").hidden = false;
    $("lobby-title").focus();
  }
  // Taking the visit back here: a reload comes back into the visit (remembered stage)
  // and this tab becomes the newest.
  $("take-back").addEventListener("click", () => window.location.reload());

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
      // They had a visit to rate.
      import("./rating.js").then(({ offerRating }) => offerRating(socket, S));
    }
    stopStream(stream);
    stream = null;
    showMediaWarnings(mediaState()); // hidden: nothing to fix once the visit is over
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
