// Camera and microphone for any page: open a preview, stop it, and explain a failure in
// words a patient can act on. As in webrtc/samples: stop the old tracks before asking for
// new ones, and branch on error.name (browsers agree on the names, not on the messages).

// Modest defaults: old phones and weak networks do better with VGA than with HD, and
// "ideal" never fails on a camera that cannot do it (only "exact"/"min" can).
export const DEFAULT_CONSTRAINTS = {
  audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 },
           frameRate: { ideal: 24, max: 30 } },
};

// Error names mapped to what the person can do about them.
const KINDS = {
  NotAllowedError: "denied", PermissionDeniedError: "denied",
  NotFoundError: "no_device", DevicesNotFoundError: "no_device",
  NotReadableError: "in_use", TrackStartError: "in_use", AbortError: "in_use",
  OverconstrainedError: "overconstrained", ConstraintNotSatisfiedError: "overconstrained",
  SecurityError: "insecure", InsecureContextError: "insecure",
  NotSupportedError: "unsupported",
};

function namedError(name, message) {
  const error = new Error(message);
  error.name = name;
  return error;
}

export function stopStream(stream) {
  if (stream) stream.getTracks().forEach((track) => track.stop());
}

// Ask for camera and/or microphone, show the picture in videoEl (muted: it is your own
// voice) and return the MediaStream. `previous` (or what videoEl shows) is stopped first,
// so a retry never holds the camera twice. Throws an Error whose name describeMediaError
// understands.
export async function openPreview(videoEl, { audio = true, video = true, previous = null } = {}) {
  stopStream(previous || (videoEl && videoEl.srcObject));
  if (videoEl) videoEl.srcObject = null;
  if (!window.isSecureContext) throw namedError("InsecureContextError", "not a secure context");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw namedError("NotSupportedError", "getUserMedia is not available");
  }
  const pick = (wanted, fallback) => (wanted === true ? fallback : wanted);
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: pick(audio, DEFAULT_CONSTRAINTS.audio), video: pick(video, DEFAULT_CONSTRAINTS.video),
    });
  } catch (error) {
    if (error.name !== "OverconstrainedError") throw error;
    // A camera that cannot meet the page's wishes still gives some picture.
    stream = await navigator.mediaDevices.getUserMedia({ audio: Boolean(audio), video: Boolean(video) });
  }
  if (videoEl) {
    videoEl.muted = true;
    videoEl.playsInline = true;
    videoEl.srcObject = stream;
    try { await videoEl.play(); } catch { /* autoplay refused: the stream is still live */ }
  }
  return stream;
}

// Which browser's settings to describe when the camera is blocked.
export function browserFamily(ua = navigator.userAgent, touchPoints = navigator.maxTouchPoints || 0) {
  if (/SamsungBrowser/i.test(ua)) return "samsung";
  if (/CriOS|FxiOS|EdgiOS/i.test(ua)) return "ios_app";
  if (/iPhone|iPad|iPod/i.test(ua) || (/Macintosh/i.test(ua) && touchPoints > 1)) return "safari_ios";
  if (/Firefox\//i.test(ua)) return "firefox";
  if (/Android/i.test(ua)) return "chrome_android";
  if (/Safari\//i.test(ua) && !/Chrome|Chromium|Edg\//i.test(ua)) return "safari_mac";
  return "chrome";
}

// Whether this browser can make the call at all: some (Debian's WebKitGTK, old or locked-down
// browsers) have a camera but no WebRTC.
export function canCall() {
  return typeof window.RTCPeerConnection === "function";
}

// Which browser to open the visit in instead, in words for this device: `strings` holds
// "use_ios", "use_android" and "use_computer".
export function browserToUse(strings, ua = navigator.userAgent) {
  const family = browserFamily(ua);
  if (family === "safari_ios" || family === "ios_app") return strings.use_ios;
  if (family === "chrome_android" || family === "samsung" || /Android/i.test(ua)) {
    return strings.use_android;
  }
  return strings.use_computer;
}

// {kind, name, title, message, help, browser} for a getUserMedia failure. `strings` holds
// "<kind>_title" and "<kind>" texts, and "help_<browser>" for blocked permissions.
export function describeMediaError(error, strings, ua = navigator.userAgent) {
  const name = (error && error.name) || "Error";
  const kind = KINDS[name] || "other";
  const described = {
    kind, name,
    title: strings[`${kind}_title`] || strings.other_title,
    message: strings[kind] || strings.other,
    help: null, browser: null,
  };
  if (kind === "denied") {
    described.browser = browserFamily(ua);
    described.help = strings[`help_${described.browser}`] || strings.help_chrome;
  }
  return described;
}

// Calls onLevel(0..1) about 10 times a second with the microphone's loudness, so a person
// can see they are heard. Returns a function that stops it.
export function watchLevel(stream, onLevel) {
  const Context = window.AudioContext || window.webkitAudioContext;
  if (!Context || !stream.getAudioTracks().length) return () => {};
  const context = new Context();
  const analyser = context.createAnalyser();
  analyser.fftSize = 512;
  context.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  context.resume().catch(() => {});
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const sample of samples) sum += sample * sample;
    // RMS scaled so ordinary speech fills most of the bar.
    onLevel(Math.min(1, Math.sqrt(sum / samples.length) * 4));
  }, 100);
  return () => { clearInterval(timer); context.close().catch(() => {}); };
}
