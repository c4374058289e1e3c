"""Language choice: English, Spanish and Brazilian Portuguese.

A ``?lang=`` on any page switches and is remembered in the session; otherwise the
browser's Accept-Language decides. Babel locale ids use ``_`` (pt_BR), HTML uses ``-``.
"""
from __future__ import annotations

from flask import Flask, request, session
from flask_babel import get_locale

# locale id -> the language's own name, shown in the switcher.
LANGUAGES: dict[str, str] = {"en": "English", "es": "Español", "pt_BR": "Português (Brasil)"}
_ALIASES = {"en": "en", "es": "es", "pt": "pt_BR", "pt_br": "pt_BR", "pt-br": "pt_BR"}


def normalise(code: str | None) -> str | None:
    """Map 'pt-BR', 'pt', 'es-MX'... to one of LANGUAGES, or None."""
    if not code:
        return None
    code = code.strip().lower()
    return _ALIASES.get(code) or _ALIASES.get(code.split("-")[0].split("_")[0])


def select_locale() -> str:
    chosen = normalise(request.args.get("lang"))
    if chosen:
        session["lang"] = chosen
        return chosen
    if session.get("lang") in LANGUAGES:
        return session["lang"]
    offered = ["en", "es", "pt-BR", "pt"]
    return normalise(request.accept_languages.best_match(offered)) or "en"


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")

    @app.context_processor
    def _language_context():
        locale = str(get_locale() or "en")
        return {"languages": LANGUAGES, "current_language": locale,
                "html_lang": locale.replace("_", "-")}
