// Small formatting helpers shared by pages. Messages come translated from the server with
// %(name)s placeholders, as gettext writes them.

export function fill(message, values) {
  return message.replace(/%\((\w+)\)s/g, (_, key) => String(values[key] ?? ""));
}

export function clockTime(iso, lang, timeZone) {
  return new Intl.DateTimeFormat(lang, { hour: "numeric", minute: "2-digit", timeZone })
    .format(new Date(iso));
}

// "4:05" or "1:02:33": how long someone has been waiting.
export function duration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
}
