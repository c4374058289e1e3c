// Admin pages: copy buttons on the integration records, progress note on the self-test.
// Everything works without this file: values stay selectable text, the form still posts.

function announce(status, text) {
  if (!status) return;
  // Cleared first so the same words are announced again on a second copy.
  status.textContent = "";
  window.setTimeout(() => { status.textContent = text; }, 50);
}

function copyFallback(field) {
  field.focus();
  field.select();
  return document.execCommand && document.execCommand("copy");
}

function setUpCopyButtons() {
  const status = document.querySelector("[data-testid=copy-status]");
  const copiedText = status ? status.dataset.copiedText : "Copied";
  for (const button of document.querySelectorAll("[data-copy-target]")) {
    const field = document.getElementById(button.dataset.copyTarget);
    if (!field) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      let copied = false;
      try {
        if (navigator.clipboard && window.isSecureContext) {
          await navigator.clipboard.writeText(field.value);
          copied = true;
        }
      } catch (error) {
        copied = false;
      }
      if (!copied) copied = copyFallback(field);
      if (copied) {
        const label = document.querySelector(`label[for="${field.id}"]`);
        announce(status, label ? `${copiedText}: ${label.textContent.trim()}` : copiedText);
      } else {
        // Leave the value selected so Ctrl+C / long-press copy works.
        field.focus();
        field.select();
      }
    });
  }
}

function setUpSelfTest() {
  const form = document.querySelector("[data-self-test-form]");
  if (!form) return;
  const progress = form.querySelector("[data-testid=self-test-progress]");
  const button = form.querySelector("[data-testid=run-self-test]");
  form.addEventListener("submit", () => {
    form.setAttribute("aria-busy", "true");
    if (progress) progress.textContent = progress.dataset.runningText;
    // Disabled after the submission has started, so one click runs one self-test.
    window.setTimeout(() => { if (button) button.disabled = true; }, 0);
  });
}

setUpCopyButtons();
setUpSelfTest();
