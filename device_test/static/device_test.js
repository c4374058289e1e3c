// The device test page's entry: what this browser cannot do is said at once, and the
// checks' code (device_test/static/checks.js, with the socket client it needs for the
// round trip) loads only when Start is pressed, so the page itself ships little script.
const data = JSON.parse(document.getElementById("device-test-data").textContent);
const S = data.strings;
const $ = (id) => document.getElementById(id);

function browserCheck() {
  const media = Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  const rtc = typeof window.RTCPeerConnection === "function";
  const problem = !window.isSecureContext ? S.insecure_page
    : (!media || !rtc) ? S.unsupported_browser : null;
  if (problem) {
    $("browser-problem").textContent = problem;
    $("browser-problem").hidden = false;
  }
  if (!("setSinkId" in HTMLMediaElement.prototype)) $("speaker-row").hidden = true;
}

let checks = null;
$("start").addEventListener("click", async () => {
  $("start").disabled = true; // until the checks' code is here and running
  checks = checks || import("./checks.js");
  try {
    (await checks).run();
  } catch (error) {
    checks = null; // the network failed: Start can try again
    $("start").disabled = false;
    throw error;
  }
});
browserCheck();
