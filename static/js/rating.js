// The optional one-tap rating (1 to 5) once the visit has ended: a tap sends it
// (`rate_visit`), a second tap replaces it. A score only, never text.
import { request } from "./socket.js";

export function offerRating(socket, strings) {
  const box = document.getElementById("visit-rating");
  if (!box || !box.hidden) return;
  const status = document.getElementById("rating-status");
  const choices = [...box.querySelectorAll(".rating-choice")];
  for (const choice of choices) {
    choice.addEventListener("click", async () => {
      for (const other of choices) other.setAttribute("aria-pressed", String(other === choice));
      const reply = await request(socket, "rate_visit", { score: Number(choice.value) });
      status.textContent = reply.ok ? strings.rating_thanks : strings.rating_failed;
      box.dataset.sent = reply.ok ? choice.value : "";
    });
  }
  box.hidden = false;
}
