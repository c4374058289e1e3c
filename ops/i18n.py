"""Language choice: English, Spanish and Brazilian Portuguese.

A ``?lang=`` on any page switches and is remembered in the session; otherwise the
browser's Accept-Language decides. Babel locale ids use ``_`` (pt_BR), HTML uses ``-``.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from babel import Locale
from flask import Flask, request, session
from flask_babel import get_locale, get_translations
from jinja2 import pass_eval_context
from markupsafe import Markup
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

# locale id -> the language's own name, shown in the switcher.
LANGUAGES: dict[str, str] = {"en": "English", "es": "Español", "pt_BR": "Português (Brasil)"}
_ALIASES = {"en": "en", "es": "es", "pt": "pt_BR", "pt_br": "pt_BR", "pt-br": "pt_BR"}
# Translations kept as Markup per locale, at most (a template passing a variable to `_()`
# must not grow it without end).
_MAX_MEMO = 2000


def normalise(code: str | None) -> str | None:
    """Map 'pt-BR', 'pt', 'es-MX'... to one of LANGUAGES, or None."""
    if not code:
        return None
    code = code.strip().lower()
    return _ALIASES.get(code) or _ALIASES.get(code.split("-")[0].split("_")[0])


def select_locale() -> str:
    """The session's language (a ``?lang=`` is stored there before the request runs, see
    ``init_app``), else the browser's."""
    if session.get("lang") in LANGUAGES:
        return session["lang"]
    return _from_accept_language(request.headers.get("Accept-Language", ""))


# Each language parsed once: Flask-Babel parses the selector's answer on every request
# unless it is already a Locale (2.5 µs a request, measured with timeit: small).
_PARSED: dict[str, Locale] = {code: Locale.parse(code) for code in LANGUAGES}


def selected_locale() -> Locale:
    """``select_locale`` as Flask-Babel's locale selector wants it."""
    return _PARSED[select_locale()]


@lru_cache(maxsize=256)
def _from_accept_language(header: str) -> str:
    """The best of our languages for an Accept-Language header. Browsers send a handful of
    distinct headers, so each is parsed once rather than on every request."""
    offered = ["en", "es", "pt-BR", "pt"]
    return normalise(parse_accept_header(header, LanguageAccept).best_match(offered)) or "en"


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")

    @app.before_request
    def _remember_language():
        """A ``?lang=`` is remembered even by a route that renders nothing: a texted link
        (``/j/<token>?lang=es``) only redirects, and ``/join`` must open in the text's
        language."""
        if request.query_string and "lang" in request.args:
            chosen = normalise(request.args["lang"])
            if chosen:
                session["lang"] = chosen
    # locale -> what every template rendered in it gets, made on first use.
    by_locale: dict[str, dict[str, Any]] = {}

    @app.context_processor
    def _language_context():
        locale = str(get_locale() or "en")
        context = by_locale.get(locale)
        if context is None:
            context = {"languages": LANGUAGES, "current_language": locale,
                       "html_lang": locale.replace("_", "-"),
                       **_template_gettext(get_translations())}
            # Every page's header, the same on every page in one language: rendered once
            # (a tenth of the join page's rendering was this loop).
            context["language_menu"] = Markup(app.jinja_env.get_template(
                "_language_menu.html").render(context).strip())
            if not app.jinja_env.auto_reload:  # else edits show at once
                by_locale[locale] = context
        return context


def _template_gettext(translations: Any) -> dict[str, Any]:
    """``_``, ``gettext``, ``ngettext``, ``pgettext`` and ``npgettext`` bound to one locale's
    translations (Flask-Babel keeps one catalog per locale for the life of the process).

    They shadow Flask-Babel's Jinja globals, which look the request's translations up again
    for every string (8 of the 14 microseconds each ``_()`` cost; a page holds dozens). Same
    output as Jinja's newstyle gettext: Markup when autoescaping, always %-formatted, so
    ``%%`` in a message still prints ``%``."""

    def _format(eval_ctx, text: str, variables: dict[str, Any]) -> str:
        if eval_ctx.autoescape:
            text = Markup(text)
        # `text % {}` is `text` when it holds no %: skip the formatting then.
        return text % variables if variables or "%" in text else text

    # Message -> its translation as Markup: templates hold literal messages, a few hundred.
    markup: dict[str, str] = {}

    @pass_eval_context
    def gettext(eval_ctx, string: str, **variables: Any) -> str:
        if variables or not eval_ctx.autoescape:
            return _format(eval_ctx, translations.ugettext(string), variables)
        text = markup.get(string)
        if text is None:
            text = _format(eval_ctx, translations.ugettext(string), variables)
            if len(markup) < _MAX_MEMO:
                markup[string] = text
        return text

    @pass_eval_context
    def ngettext(eval_ctx, singular: str, plural: str, num: int, **variables: Any) -> str:
        variables.setdefault("num", num)
        return _format(eval_ctx, translations.ungettext(singular, plural, num), variables)

    @pass_eval_context
    def pgettext(eval_ctx, context: str, string: str, **variables: Any) -> str:
        variables.setdefault("context", context)
        return _format(eval_ctx, translations.upgettext(context, string), variables)

    @pass_eval_context
    def npgettext(eval_ctx, context: str, singular: str, plural: str, num: int,
                  **variables: Any) -> str:
        variables.setdefault("context", context)
        variables.setdefault("num", num)
        return _format(eval_ctx, translations.unpgettext(context, singular, plural, num),
                       variables)

    return {"_": gettext, "gettext": gettext, "ngettext": ngettext, "pgettext": pgettext,
            "npgettext": npgettext}
