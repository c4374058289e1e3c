"""The words of each text: language, local time, no clinical detail, short, opt-out line."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from flask_babel import force_locale, gettext

from app import create_app
from notifications.models import SmsKind
from notifications.texts import locale_for, render
from tests.conftest import make_config
from visits.models import Appointment

URL = "https://visits.example.org/j/" + "x" * 43


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    application = create_app(make_config(tmp_path_factory.mktemp("texts")))
    with application.app_context():
        yield application


def appointment(department: str | None = "Family Medicine - Madison") -> Appointment:
    # 09:30 in Chicago (CST, before daylight time starts on 10 March 2030).
    return Appointment(start_at=datetime(2030, 3, 4, 15, 30, tzinfo=timezone.utc),
                       end_at=datetime(2030, 3, 4, 16, 0, tzinfo=timezone.utc),
                       timezone="America/Chicago", department_display=department)


@pytest.mark.parametrize(("code", "locale"), [
    ("es", "es"), ("spa", "es"), ("es-MX", "es"), ("pt-BR", "pt_BR"), ("por", "pt_BR"),
    ("pt", "pt_BR"), ("eng", "en"), ("en", "en"), ("ara", "en"), ("", "en"), (None, "en"),
])
def test_pid15_language_codes_pick_a_supported_locale(code, locale):
    assert locale_for(code) == locale


@pytest.mark.parametrize("kind", [k for k in SmsKind if k != SmsKind.TEST])
@pytest.mark.parametrize("language", ["en", "es", "pt_BR"])
def test_every_text_is_short_local_and_ends_with_the_opt_out(app, kind, language):
    body = render(kind, language, appointment("A" * 150), URL)

    assert len(body) <= 300
    assert "9:30" in body and "CST" in body
    with force_locale(language):
        assert body.endswith(" " + gettext("Reply STOP to opt out."))
    assert "\u202f" not in body and "\u00a0" not in body
    assert (URL in body) is (kind != SmsKind.CANCELLATION)


def test_english_confirmation_reads_naturally(app):
    body = render(SmsKind.CONFIRMATION, "en", appointment(), URL)

    assert body == ("Family Medicine - Madison: your video visit is booked for Mon, Mar 4 at "
                    f"9:30 AM CST. Join here: {URL}?lang=en Reply STOP to opt out.")


@pytest.mark.parametrize(("language", "lang"), [("es", "es"), ("pt_BR", "pt-BR"), (None, "en")])
def test_the_link_opens_in_the_language_of_the_text(app, language, lang):
    body = render(SmsKind.REMINDER, language, appointment(), URL)

    assert f"{URL}?lang={lang} " in body


# GSM 03.38's basic alphabet: a text with any other character goes as UCS-2, with about
# half the room per segment.
_GSM_BASIC = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
                 "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")


@pytest.mark.parametrize("language", ["es", "pt_BR", None])
def test_the_opt_out_line_is_correct_and_costs_no_extra_segments(app, language):
    """Written correctly (no "nao") in words that fit the GSM alphabet, so the opt-out line
    alone never turns a text into UCS-2."""
    body = render(SmsKind.REMINDER, language, appointment(), URL)
    opt_out = body.split("?lang=")[1].split(" ", 1)[1]

    assert opt_out in {"Reply STOP to opt out.", "Responda STOP para dejar de recibir mensajes.",
                       "Responda STOP para parar de receber mensagens."}
    assert set(opt_out) <= _GSM_BASIC


def test_spanish_and_portuguese_dates_use_their_own_words(app):
    spanish = render(SmsKind.REMINDER, "es", appointment(), URL)
    portuguese = render(SmsKind.REMINDER, "pt_BR", appointment(), URL)

    assert "lun, 4 mar" in spanish and "9:30 CST" in spanish
    assert "seg., 4 de mar." in portuguese and "09:30 CST" in portuguese


def test_without_a_department_the_text_names_no_one(app):
    body = render(SmsKind.CANCELLATION, "en", appointment(None), None)

    assert body.startswith("Your care team: your video visit on Mon, Mar 4 at 9:30 AM CST is "
                           "cancelled.")


def test_a_test_text_names_the_endpoint(app):
    body = render(SmsKind.TEST, "en", None, None, clinic="epic-prod")

    assert body == ("Virtual Visits test message: texting works for epic-prod. "
                    "Reply STOP to opt out.")
