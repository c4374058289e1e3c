// Grades and the call-quality estimate, kept apart from the page so they can be tested
// alone (tests/browser/test_device_test.py imports this module in the page).

const RANK = { pass: 0, warn: 1, fail: 2 };

// [passLimit, failLimit]: lower is better when passLimit < failLimit (RTT, jitter, loss),
// higher is better otherwise (bitrate, MOS). Limits come from the server's settings.
export function grade(value, [passLimit, failLimit], { inclusivePass = false } = {}) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "skipped";
  if (passLimit <= failLimit) {
    if (value < passLimit) return "pass";
    return value > failLimit ? "fail" : "warn";
  }
  if (value > passLimit || (inclusivePass && value >= passLimit)) return "pass";
  return value < failLimit ? "fail" : "warn";
}

// The worst of several grades; "skipped" ones do not count, and none at all is "skipped".
export function worst(grades) {
  const ran = grades.filter((g) => g in RANK);
  if (!ran.length) return "skipped";
  return ran.reduce((a, b) => (RANK[b] > RANK[a] ? b : a));
}

// The overall grade: the worst check that ran; nothing ran at all, or a required check
// (`required`, e.g. the test call) that did not run, is a fail, never a pass. The server
// decides the same way (device_test/services.py, overall_of).
export function overall(statuses, required = []) {
  const result = worst(statuses);
  if (required.some((status) => !(status in RANK))) return "fail";
  return result === "skipped" ? "fail" : result;
}

// Estimated MOS from the simplified ITU-T G.107 E-model, as Twilio's diagnostics compute it:
// effective latency = RTT + 2 × jitter + 10 ms; R = 93.2 − Le/40 below 160 ms, else
// 93.2 − (Le − 120)/10; R −= 2.5 × loss %; MOS = 1 + 0.035 R + 7e-6 R (R − 60)(100 − R).
export const R0 = 93.2;
export function mos(rttMs, jitterMs, lossPct) {
  if (![rttMs, jitterMs, lossPct].every(Number.isFinite)) return null;
  const effective = rttMs + 2 * jitterMs + 10;
  let r = effective < 160 ? R0 - effective / 40 : R0 - (effective - 120) / 10;
  r -= 2.5 * lossPct;
  r = Math.min(100, Math.max(0, r));
  const score = 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r);
  return Math.round(Math.min(5, Math.max(1, score)) * 100) / 100;
}

// Test-call grade from its measurements and the thresholds. The video bitrate counts only
// when the sender said its quality was limited (by bandwidth or CPU) at some point, or
// could not say: an encoder content with fewer bits for a still picture is no problem.
export function gradeCall(m, t) {
  const bitrate = m.video_limited === false ? "skipped" : grade(m.bitrate_in_kbps, t.video_kbps);
  return worst([
    grade(m.rtt_ms, t.rtt_ms), grade(m.jitter_ms, t.jitter_ms),
    grade(m.packet_loss_pct, t.packet_loss_pct), bitrate,
    grade(m.mos, t.mos, { inclusivePass: true }),
  ]);
}

// Median of a list of numbers (null when empty).
export function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

// dBFS of a linear amplitude (1.0 = full scale), within -100..0: float audio may peak past
// full scale, which is clipping all the same.
export function dbfs(amplitude) {
  return amplitude > 0 ? Math.min(0, Math.max(-100, 20 * Math.log10(amplitude))) : -100;
}
