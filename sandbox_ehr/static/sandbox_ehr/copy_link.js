// "Copy link" on the sandbox's patient-link page; selects the text where the clipboard
// API is unavailable (plain http on another host than localhost).
const S = JSON.parse(document.getElementById("copy-strings").textContent);
const input = document.getElementById("join-link");
const status = document.getElementById("copy-status");

document.getElementById("copy-link").addEventListener("click", async () => {
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
    status.textContent = S.copied;
  } catch {
    status.textContent = document.execCommand && document.execCommand("copy") ? S.copied : S.select;
  }
});
