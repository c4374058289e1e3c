// The device test's checks, loaded by device_test.js when Start is pressed: speaker,
// microphone, camera, connection and a loopback test call, each graded
// pass/warn/fail/skipped (data-status) and announced; then a plain-language summary, posted
// to the server. A check that cannot run says so: it is "skipped" or "fail" with a reason,
// never a silent pass.
import { DEFAULT_CONSTRAINTS, describeMediaError, stopStream } from "../js/media.js";
import { fill } from "../js/format.js";
import { dbfs, grade, gradeCall, median, mos, overall, worst } from "./grading.js";

const data = JSON.parse(document.getElementById("device-test-data").textContent);
const S = data.strings;
const T = data.thresholds;
const CHECKS = ["speaker", "microphone", "camera", "connection", "test_call"];
const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const round = (value, digits = 0) => (Number.isFinite(value)
  ? Math.round(value * 10 ** digits) / 10 ** digits : null);

let results = {};
let micStream = null;
let camStream = null;
let running = false;
const support = {
  media: Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia),
  rtc: "RTCPeerConnection" in window,
  recorder: "MediaRecorder" in window,
  sinkId: "setSinkId" in HTMLMediaElement.prototype,
};

// --- showing results --------------------------------------------------------------------

function announce(text) {
  const el = $("announcer");
  el.textContent = "";
  setTimeout(() => { el.textContent = text; }, 50);  // a change, so it is read again
}

function setCheck(name, status, message = "", details = "", measurements = {}) {
  const el = document.querySelector(`[data-check="${name}"]`);
  el.dataset.status = status;
  el.querySelector("[data-role=badge]").textContent = S[status];
  el.querySelector("[data-role=message]").textContent = message;
  el.querySelector("[data-role=details]").textContent = details;
  results[name] = { status, ...(message ? { message: message.slice(0, 300) } : {}), ...measurements };
  if (status !== "pending") {
    announce(fill(S.announce, { check: S[name], status: S[status] }) + (message ? `. ${message}` : ""));
  }
}

function failMedia(name, error) {
  const described = describeMediaError(error, S);
  setCheck(name, "fail", [described.title, described.message, described.help].filter(Boolean).join(". "));
  $("help-all").hidden = described.kind !== "denied";
}

// --- devices ----------------------------------------------------------------------------

async function listDevices() {
  if (!support.media || !navigator.mediaDevices.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
  const fillSelect = (kind, id, row) => {
    const select = $(id);
    const chosen = select.value;
    const found = devices.filter((d) => d.kind === kind && d.deviceId);
    select.replaceChildren(...found.map((d, i) => {
      const option = new Option(d.label || `${S.default_device} ${i + 1}`, d.deviceId);
      option.selected = d.deviceId === chosen;
      return option;
    }));
    $(row).hidden = found.length < 2;  // nothing to choose with one device
  };
  fillSelect("audioinput", "microphone-select", "microphone-row");
  fillSelect("videoinput", "camera-select", "camera-row");
  if (support.sinkId) fillSelect("audiooutput", "speaker-select", "speaker-row");
}

const chosen = (id) => ($(id).value ? { deviceId: { exact: $(id).value } } : {});

// --- speaker ----------------------------------------------------------------------------

async function checkSpeaker() {
  const Context = window.AudioContext || window.webkitAudioContext;
  if (!Context) { setCheck("speaker", "skipped", S.speaker_no_audio); return; }
  setCheck("speaker", "running");
  const context = new Context();
  const oscillator = context.createOscillator();
  const gain = context.createGain();
  const destination = context.createMediaStreamDestination();
  oscillator.frequency.value = 440;
  gain.gain.value = 0;
  oscillator.connect(gain).connect(destination);
  oscillator.start();
  // Beep half a second in every second, through an <audio> element so setSinkId applies.
  const beeper = setInterval(() => {
    gain.gain.setValueAtTime(0.3, context.currentTime);
    gain.gain.setValueAtTime(0, context.currentTime + 0.5);
  }, 1000);
  const audio = new Audio();
  audio.srcObject = destination.stream;
  if (support.sinkId && $("speaker-select").value) {
    await audio.setSinkId($("speaker-select").value).catch(() => {});
  }
  await context.resume().catch(() => {});
  await audio.play().catch(() => {});
  $("speaker-question").hidden = false;
  $("speaker-yes").focus();
  const heard = await new Promise((resolve) => {
    $("speaker-yes").onclick = () => resolve(true);
    $("speaker-no").onclick = () => resolve(false);
  });
  clearInterval(beeper);
  oscillator.stop();
  audio.pause();
  audio.srcObject = null;
  context.close().catch(() => {});
  $("speaker-question").hidden = true;
  setCheck("speaker", heard ? "pass" : "fail", heard ? S.speaker_pass : S.speaker_fail, "",
           { heard });
}

// --- microphone -------------------------------------------------------------------------

const RECORD_MS = 3500;
const SILENCE_DBFS = -60;
const SILENCE_MS = 3000;

async function checkMicrophone() {
  setCheck("microphone", "running", S.mic_recording);
  stopStream(micStream);
  try {
    // The same processing a visit uses, so the level is what the other side would get.
    micStream = await navigator.mediaDevices.getUserMedia({ audio: {
      ...DEFAULT_CONSTRAINTS.audio, ...chosen("microphone-select") } });
  } catch (error) { failMedia("microphone", error); return; }
  const Context = window.AudioContext || window.webkitAudioContext;
  const context = new Context();
  await context.resume().catch(() => {});
  const analyser = context.createAnalyser();
  analyser.fftSize = 2048;
  context.createMediaStreamSource(micStream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  let recorder = null;
  const chunks = [];
  if (support.recorder) {
    recorder = new MediaRecorder(micStream);
    recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
    recorder.start();
  }
  let peak = 0, quietSince = performance.now(), longestQuiet = 0, clipped = 0, counted = 0;
  const started = performance.now();
  while (performance.now() - started < RECORD_MS) {
    await sleep(50);
    analyser.getFloatTimeDomainData(samples);
    let windowPeak = 0, sum = 0;
    for (const sample of samples) {
      const size = Math.abs(sample);
      windowPeak = Math.max(windowPeak, size);
      sum += sample * sample;
      if (size >= 0.99) clipped += 1;
    }
    counted += samples.length;
    peak = Math.max(peak, windowPeak);
    $("mic-level").value = Math.min(1, Math.sqrt(sum / samples.length) * 4);
    const now = performance.now();
    if (dbfs(windowPeak) > SILENCE_DBFS) quietSince = now;
    longestQuiet = Math.max(longestQuiet, now - quietSince);
  }
  context.close().catch(() => {});
  $("mic-level").value = 0;
  if (recorder) {
    await new Promise((resolve) => { recorder.onstop = resolve; recorder.stop(); });
    const audio = $("recording");
    if (audio.src) URL.revokeObjectURL(audio.src);
    audio.src = URL.createObjectURL(new Blob(chunks, { type: recorder.mimeType }));
    $("recording-row").hidden = false;
  }
  const clippingPct = counted ? (100 * clipped) / counted : 0;
  const measured = { peak_dbfs: round(dbfs(peak), 1), clipping_pct: round(clippingPct, 2) };
  const details = fill(S.mic_details, { peak: measured.peak_dbfs });
  if (longestQuiet >= SILENCE_MS) {
    setCheck("microphone", "warn", S.mic_silent, details, measured);
  } else if (clippingPct > 1) {
    setCheck("microphone", "warn", S.mic_clipping, details, measured);
  } else {
    const extra = support.recorder ? "" : ` ${S.no_recorder}`;
    setCheck("microphone", "pass", S.mic_pass + extra, details, measured);
  }
}

// --- camera -----------------------------------------------------------------------------

const CAMERA_MS = 2500;
const BLACK_LUMA = 20;

async function checkCamera() {
  setCheck("camera", "running");
  stopStream(camStream);
  try {
    camStream = await navigator.mediaDevices.getUserMedia({
      video: { ...DEFAULT_CONSTRAINTS.video, ...chosen("camera-select") } });
  } catch (error) { failMedia("camera", error); return; }
  const video = $("camera-preview");
  video.srcObject = camStream;
  await video.play().catch(() => {});
  let frames = 0;
  let counting = true;
  if ("requestVideoFrameCallback" in video) {
    const tick = () => { frames += 1; if (counting) video.requestVideoFrameCallback(tick); };
    video.requestVideoFrameCallback(tick);
  }
  const canvas = document.createElement("canvas");
  canvas.width = 64; canvas.height = 48;
  const draw = canvas.getContext("2d", { willReadFrequently: true });
  let sampled = 0, black = 0, changed = 0, previous = null;
  const started = performance.now();
  while (performance.now() - started < CAMERA_MS) {
    await sleep(100);
    if (!video.videoWidth) continue;
    draw.drawImage(video, 0, 0, canvas.width, canvas.height);
    const pixels = draw.getImageData(0, 0, canvas.width, canvas.height).data;
    let luma = 0, difference = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      luma += 0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2];
      if (previous) difference += Math.abs(pixels[i + 1] - previous[i + 1]);
    }
    luma /= pixels.length / 4;
    sampled += 1;
    if (luma <= BLACK_LUMA) black += 1;
    if (previous && difference / (pixels.length / 4) > 0.5) changed += 1;
    previous = pixels;
  }
  counting = false;
  const elapsed = (performance.now() - started) / 1000;
  const settings = camStream.getVideoTracks()[0]?.getSettings() || {};
  const fps = frames ? frames / elapsed : settings.frameRate;
  const measured = {
    width: video.videoWidth || settings.width || null, height: video.videoHeight || settings.height || null,
    fps: round(fps, 1), black_pct: sampled ? round((100 * black) / sampled) : null,
    frozen: sampled > 4 ? changed === 0 : null,
  };
  const details = measured.width ? fill(S.camera_details, { width: measured.width,
    height: measured.height, fps: measured.fps ?? "?" }) : "";
  if (!sampled) setCheck("camera", "fail", S.camera_no_frames, details, measured);
  else if (black * 2 > sampled) setCheck("camera", "fail", S.camera_black, details, measured);
  else if (Number.isFinite(fps) && fps < 5) setCheck("camera", "fail", S.camera_slow, details, measured);
  else if (measured.frozen) setCheck("camera", "warn", S.camera_frozen, details, measured);
  else setCheck("camera", "pass", S.camera_pass, details, measured);
}

// --- connection -------------------------------------------------------------------------

function withTimeout(promise, ms, fallback) {
  return Promise.race([promise, sleep(ms).then(() => fallback)]);
}

async function socketRtt() {
  // The socket client is most of the page's script: only this check uses it.
  const { connectSocket } = await import("../js/socket.js");
  const socket = connectSocket({});
  try {
    const connected = await withTimeout(new Promise((resolve) => {
      if (socket.connected) resolve(true);
      socket.once("connect", () => resolve(true));
    }), 5000, false);
    if (!connected) return null;
    const rtts = [];
    for (let i = 0; i < 10; i += 1) {
      const started = performance.now();
      const reply = await socket.timeout(5000).emitWithAck("ping_server", {}).catch(() => null);
      if (reply && reply.server_time_ms) rtts.push(performance.now() - started);
    }
    return rtts.length >= 5 ? median(rtts) : null;
  } finally {
    socket.disconnect();
  }
}

// kbps for fetching then posting growing probes, stopping once one takes ~half a second.
async function throughput(direction) {
  let best = null;
  for (const size of [128 * 1024, 1024 * 1024, 4 * 1024 * 1024]) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 10000);
    const started = performance.now();
    try {
      if (direction === "down") {
        const response = await fetch(`${data.download_url}?bytes=${size}`, { cache: "no-store", signal: abort.signal });
        if (!response.ok) break;
        await response.arrayBuffer();
      } else {
        const response = await fetch(data.upload_url, { method: "POST", body: new Uint8Array(size),
          headers: { "Content-Type": "application/octet-stream" }, signal: abort.signal });
        if (!response.ok) break;
      }
    } catch { break; } finally { clearTimeout(timer); }
    const ms = Math.max(1, performance.now() - started);
    best = (size * 8) / ms;  // bits per ms = kbps
    if (ms > 500) break;
  }
  return best === null ? null : round(best);
}

function transportKind(url) {
  if (url.startsWith("stun:")) return "stun";
  if (url.startsWith("turns:")) return "turns";
  return /transport=tcp/i.test(url) ? "turn-tcp" : "turn-udp";
}

// Gather candidates through one server URL only; a blocked transport is silent, so it
// has its own timeout. TURN is tried relay-only, so only a relay candidate proves it.
function probeTransport(server, url) {
  const kind = transportKind(url);
  const timeoutMs = data.transport_timeout_seconds * 1000;
  const pc = new RTCPeerConnection({ iceServers: [{ ...server, urls: [url] }],
    iceTransportPolicy: kind === "stun" ? "all" : "relay" });
  pc.createDataChannel("probe");
  const started = performance.now();
  return new Promise((resolve) => {
    let lastError = null;
    let finished = false;
    const done = (status, error = null) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      pc.close();
      resolve({ kind, status, error, ms: round(performance.now() - started) });
    };
    const timer = setTimeout(() => done(kind === "stun" ? "warn" : "fail", lastError || "timeout"), timeoutMs);
    pc.onicecandidate = (event) => {
      if (!event.candidate) {
        if (kind === "stun") done("warn", "no_address");
        else done("fail", lastError || "timeout");
      } else if (event.candidate.type === (kind === "stun" ? "srflx" : "relay")) {
        done("pass");
      }
    };
    pc.onicecandidateerror = (event) => {
      lastError = String(event.errorCode);
      // 401/403: credentials refused; 701: TLS or DNS failure. No point waiting further.
      if (kind !== "stun" && [401, 403, 701].includes(event.errorCode)) done("fail", lastError);
    };
    pc.createOffer().then((offer) => pc.setLocalDescription(offer)).catch(() => done("fail", "offer"));
  });
}

function transportText(result) {
  if (result.status === "pass") return S.transport_ok;
  if (result.error === "timeout") return fill(S.transport_timeout, { seconds: data.transport_timeout_seconds });
  if (result.error === "no_address") return S.transport_no_address;
  if (["401", "403"].includes(result.error)) return fill(S.transport_auth, { code: result.error });
  return fill(S.transport_error, { code: result.error });
}

async function checkConnection() {
  setCheck("connection", "running");
  const list = $("transports");
  list.replaceChildren();
  const probes = [];
  if (support.rtc) {
    for (const server of data.ice_servers) {
      for (const url of [].concat(server.urls)) probes.push(probeTransport(server, url));
    }
  }
  const [rtt, down, up, transports] = await Promise.all([
    socketRtt().catch(() => null), throughput("down"), throughput("up"), Promise.all(probes)]);
  for (const result of transports) {
    const item = document.createElement("li");
    item.setAttribute("data-testid", "ice-transport");
    item.dataset.kind = result.kind;
    item.dataset.status = result.status;
    item.textContent = `${S[result.kind]}: ${transportText(result)}`;
    list.append(item);
  }
  const measured = { rtt_ms: round(rtt), download_kbps: down, upload_kbps: up, transports };
  const details = fill(S.conn_details, { rtt: measured.rtt_ms ?? "?", down: down ?? "?", up: up ?? "?" });
  if (rtt === null && down === null) {
    setCheck("connection", "fail", S.conn_offline, details, measured);
    return;
  }
  const network = worst([grade(rtt, T.rtt_ms), grade(down, T.video_kbps), grade(up, T.video_kbps)]);
  const blocked = transports.some((t) => t.status === "fail");
  if (network === "fail") setCheck("connection", "fail", S.conn_fail, details, measured);
  else if (network === "warn") setCheck("connection", "warn", S.conn_warn, details, measured);
  else if (blocked) setCheck("connection", "warn", S.conn_relay_blocked, details, measured);
  else setCheck("connection", "pass", S.conn_pass, details, measured);
}

// --- test call --------------------------------------------------------------------------

// Something to send when the camera or microphone could not start: a moving picture and
// a tone, so the network is still tested.
function syntheticStream() {
  const canvas = document.createElement("canvas");
  canvas.width = 320; canvas.height = 240;
  const draw = canvas.getContext("2d");
  let x = 0;
  const timer = setInterval(() => {
    draw.fillStyle = "#0b5cad"; draw.fillRect(0, 0, 320, 240);
    draw.fillStyle = "#fff"; draw.fillRect((x += 7) % 320, 100, 40, 40);
  }, 50);
  const stream = canvas.captureStream(20);
  const Context = window.AudioContext || window.webkitAudioContext;
  let context = null;
  if (Context) {
    context = new Context();
    const oscillator = context.createOscillator();
    const destination = context.createMediaStreamDestination();
    const gain = context.createGain();
    gain.gain.value = 0.05;
    oscillator.connect(gain).connect(destination);
    oscillator.start();
    destination.stream.getAudioTracks().forEach((track) => stream.addTrack(track));
  }
  stream.release = () => { clearInterval(timer); stopStream(stream); if (context) context.close().catch(() => {}); };
  return stream;
}

async function snapshot(sender, receiver) {
  const [sent, received] = await Promise.all([sender.getStats(), receiver.getStats()]);
  const out = { at: performance.now(), bytesSent: 0, videoBytes: 0, lost: 0, packets: 0,
                jitter: null, rtt: null, limitation: null };
  let pairId = null;
  sent.forEach((stat) => {
    if (stat.type === "outbound-rtp") out.bytesSent += stat.bytesSent || 0;
    if (stat.type === "outbound-rtp" && stat.kind === "video") out.limitation = stat.qualityLimitationReason ?? null;
    if (stat.type === "transport" && stat.selectedCandidatePairId) pairId = stat.selectedCandidatePairId;
  });
  sent.forEach((stat) => {
    const selected = pairId ? stat.id === pairId : stat.nominated && stat.state === "succeeded";
    if (stat.type === "candidate-pair" && selected && Number.isFinite(stat.currentRoundTripTime)) {
      out.rtt = stat.currentRoundTripTime * 1000;
    }
  });
  received.forEach((stat) => {
    if (stat.type !== "inbound-rtp") return;
    out.lost += Math.max(0, stat.packetsLost || 0);
    out.packets += stat.packetsReceived || 0;
    if (stat.kind === "video") out.videoBytes += stat.bytesReceived || 0;
    if (stat.kind === "audio" && Number.isFinite(stat.jitter)) out.jitter = stat.jitter * 1000;
  });
  return out;
}

// One loopback call between two RTCPeerConnections in this page, through our ICE servers.
async function runCall(stream, policy, durationMs) {
  const config = { iceServers: data.ice_servers, iceTransportPolicy: policy };
  const caller = new RTCPeerConnection(config);
  const callee = new RTCPeerConnection(config);
  caller.onicecandidate = (e) => e.candidate && callee.addIceCandidate(e.candidate).catch(() => {});
  callee.onicecandidate = (e) => e.candidate && caller.addIceCandidate(e.candidate).catch(() => {});
  const remote = new MediaStream();
  callee.ontrack = (event) => {
    remote.addTrack(event.track);
    $("call-video").srcObject = remote;
    $("call-audio").srcObject = remote;
  };
  stream.getTracks().forEach((track) => caller.addTrack(track, stream));
  try {
    await caller.setLocalDescription(await caller.createOffer());
    await callee.setRemoteDescription(caller.localDescription);
    await callee.setLocalDescription(await callee.createAnswer());
    await caller.setRemoteDescription(callee.localDescription);
    const connected = await withTimeout(new Promise((resolve) => {
      const check = () => {
        if (caller.connectionState === "connected") resolve(true);
        if (caller.connectionState === "failed") resolve(false);
      };
      caller.onconnectionstatechange = check;
      check();
    }), data.transport_timeout_seconds * 2000, false);
    if (!connected) return { connected: false };
    $("call-video").play().catch(() => {});
    await sleep(1000);  // inbound stats appear only once packets arrive
    const samples = [await snapshot(caller, callee)];
    const until = performance.now() + Math.max(1000, durationMs - 1000);
    while (performance.now() < until) {
      await sleep(1000);
      samples.push(await snapshot(caller, callee));
    }
    return { connected: true, metrics: metricsOf(samples) };
  } catch {
    return { connected: false };
  } finally {
    caller.close();
    callee.close();
  }
}

function metricsOf(samples) {
  const first = samples[0];
  const last = samples[samples.length - 1];
  // Bitrate over the last two seconds: the first seconds are the encoder ramping up.
  const recent = samples[Math.max(0, samples.length - 3)];
  const seconds = Math.max(0.001, (last.at - recent.at) / 1000);
  const lost = last.lost - first.lost;
  const packets = last.packets - first.packets;
  const rtts = samples.map((s) => s.rtt).filter(Number.isFinite);
  const jitters = samples.map((s) => s.jitter).filter(Number.isFinite);
  const metrics = {
    rtt_ms: round(median(rtts) ?? NaN),
    jitter_ms: round(jitters.length ? jitters.reduce((a, b) => a + b) / jitters.length : NaN, 1),
    packet_loss_pct: lost + packets > 0 ? round((100 * lost) / (lost + packets), 1) : null,
    bitrate_in_kbps: round(((last.videoBytes - recent.videoBytes) * 8) / 1000 / seconds),
    bitrate_out_kbps: round(((last.bytesSent - recent.bytesSent) * 8) / 1000 / seconds),
  };
  // The bitrate speaks of the network only if the sender said the network still held it
  // back ("bandwidth") when the measurement ended. "none": the encoder needed no more bits
  // (a still picture, or the ramp-up done); "cpu": a slow phone or a busy computer, which
  // "move closer to your router" would not help. Then the grade ignores the bitrate
  // (docs/device-test.md).
  const reasons = samples.map((s) => s.limitation).filter(Boolean);
  metrics.video_limited = reasons.length ? reasons[reasons.length - 1] === "bandwidth" : null;
  metrics.mos = mos(metrics.rtt_ms, metrics.jitter_ms, metrics.packet_loss_pct);
  return metrics;
}

async function checkTestCall() {
  // No WebRTC: the visit itself cannot work here, so the check fails (not "skipped",
  // which would leave the other checks to call the result a pass).
  if (!support.rtc) { setCheck("test_call", "fail", S.no_webrtc); return; }
  setCheck("test_call", "running");
  const live = [micStream, camStream].flatMap((s) => (s ? s.getTracks() : []))
    .filter((track) => track.readyState === "live");
  const stream = live.length === 2 ? new MediaStream(live) : syntheticStream();
  const total = data.call_seconds * 1000;
  const hasTurn = data.ice_servers.some((s) => [].concat(s.urls).some((u) => u.startsWith("turn")));
  let relay = null;
  let measured = null;
  try {
    if (hasTurn) {
      $("check-test-call-progress").textContent = S.call_relay;
      const result = await runCall(stream, "relay", total / 2);
      relay = result.connected ? "pass" : "fail";
      measured = result.metrics || null;
    }
    $("check-test-call-progress").textContent = S.call_direct;
    const best = await runCall(stream, "all", hasTurn ? total / 2 : total);
    measured = best.metrics || measured;
  } finally {
    $("check-test-call-progress").textContent = "";
    if (stream.release) stream.release();
  }
  if (!measured) {
    setCheck("test_call", "fail", S.call_no_connect, "", { relay });
    return;
  }
  let status = gradeCall(measured, T);
  const details = fill(S.call_details, { rtt: measured.rtt_ms ?? "?", jitter: measured.jitter_ms ?? "?",
    loss: measured.packet_loss_pct ?? "?", vin: measured.bitrate_in_kbps ?? "?",
    vout: measured.bitrate_out_kbps ?? "?", mos: measured.mos ?? "?" });
  let message = { pass: S.call_pass, warn: S.call_warn, fail: S.call_fail, skipped: S.call_no_connect }[status];
  if (relay === "fail") {
    status = worst([status, "warn"]);
    if (status === "warn") message = S.call_relay_failed;
  }
  setCheck("test_call", status === "skipped" ? "fail" : status, message, details, { ...measured, relay });
}

// --- the run ----------------------------------------------------------------------------

function report() {
  const checks = {};
  for (const name of CHECKS) checks[name] = results[name] || { status: "skipped" };
  return { version: 1, browser: navigator.userAgent.slice(0, 120), checks };
}

function plainText(doc, total) {
  const lines = [`${S[`summary_${total}`]}`];
  for (const name of CHECKS) {
    const check = doc.checks[name];
    lines.push(`${S[name]}: ${S[check.status]}${check.message ? ` — ${check.message}` : ""}`);
  }
  return lines.join("\n");
}

function showSummary(total) {
  const summary = $("summary");
  summary.dataset.status = total;
  const heading = document.createElement("p");
  heading.className = "summary-lead";
  heading.textContent = support.rtc ? S[`summary_${total}`] : S.summary_no_webrtc;
  const items = CHECKS.filter((n) => results[n] && ["warn", "fail"].includes(results[n].status))
    .map((n) => {
      const item = document.createElement("li");
      item.textContent = `${S[n]}: ${results[n].message || S[results[n].status]}`;
      return item;
    });
  const list = document.createElement("ul");
  list.append(...items);
  summary.replaceChildren(heading, ...(items.length ? [list] : []));
  $("result-actions").hidden = false;
}

async function saveResult(doc) {
  try {
    const response = await fetch(data.results_url, { method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...doc, context: data.context || null }) });
    const reply = await response.json();
    const note = document.createElement("p");
    note.setAttribute("data-testid", "device-test-saved");
    note.dataset.writtenBack = String(Boolean(reply.written_back));
    note.textContent = !response.ok ? S.summary_not_saved : (reply.written_back ? S.summary_sent : "");
    if (note.textContent || response.ok) $("summary").append(note);
  } catch {
    const note = document.createElement("p");
    note.textContent = S.summary_not_saved;
    $("summary").append(note);
  }
}

export async function run() {
  if (running) return;
  running = true;
  results = {};
  $("start").disabled = true;
  $("again").disabled = true;
  $("result-actions").hidden = true;
  $("summary").dataset.status = "running";
  $("summary").replaceChildren(Object.assign(document.createElement("p"), { textContent: S.summary_running }));
  for (const name of CHECKS) setCheck(name, "pending");
  results = {};
  // One check going wrong must not stop the others; it is then reported as not checked.
  const safely = async (name, check) => {
    try { await check(); } catch (error) {
      console.error(`device test: ${name} check failed`, error);
      setCheck(name, "skipped", S.other);
    }
  };
  try {
    await safely("speaker", checkSpeaker);
    if (support.media) {
      await safely("microphone", checkMicrophone);
      await listDevices();
      await safely("camera", checkCamera);
      await listDevices();
    } else {
      setCheck("microphone", "fail", S.unsupported_browser);
      setCheck("camera", "fail", S.unsupported_browser);
    }
    await safely("connection", checkConnection);
    await safely("test_call", checkTestCall);
  } finally {
    for (const name of CHECKS) {
      if (!results[name] || ["pending", "running"].includes(results[name].status)) {
        setCheck(name, "skipped");
      }
    }
    stopStream(micStream); stopStream(camStream);
    micStream = camStream = null;
    $("camera-preview").srcObject = null;
    const doc = report();
    const total = overall(CHECKS.map((n) => doc.checks[n].status), [doc.checks.test_call.status]);
    showSummary(total);
    announce(support.rtc ? S[`summary_${total}`] : S.summary_no_webrtc);
    running = false;
    $("start").disabled = false;
    $("again").disabled = false;
    lastReport = { ...doc, overall: total, finished_at: new Date().toISOString() };
    await saveResult(doc);
  }
}

let lastReport = null;

$("again").addEventListener("click", run);
$("copy").addEventListener("click", async () => {
  if (!lastReport) return;
  try {
    await navigator.clipboard.writeText(plainText(lastReport, lastReport.overall));
    announce(S.copied);
  } catch { announce(S.copy_failed); }
});
$("download").addEventListener("click", () => {
  if (!lastReport) return;
  const blob = new Blob([JSON.stringify(lastReport, null, 2)], { type: "application/json" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `device-test-${lastReport.finished_at.slice(0, 10)}.json`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
});
