"""Socket replies reach people in their own language: the domain's refusals carry a
stable code and are translated once, at the socket edge, in the page's language."""
from __future__ import annotations

import pytest

from extensions import socketio
from tests import factories
from tests.integration.test_visit_realtime import staff_socket
from visits import presence


@pytest.fixture
def visit(app):
    presence.reset_for_tests()
    with app.app_context():
        yield factories.make_visit()
    presence.reset_for_tests()


def patient_page(app, participant, *, lang=None, accept_language=None):
    """A patient's socket whose HTTP session chose ``lang`` (``?lang=``), or whose browser
    sends ``accept_language``."""
    client = app.test_client()
    if lang:
        with client.session_transaction() as session:
            session["lang"] = lang
    headers = {"Accept-Language": accept_language} if accept_language else None
    return socketio.test_client(app, flask_test_client=client, headers=headers,
                                auth={"join_token": factories.join_token(participant)})


def test_a_refusal_in_a_spanish_session_comes_back_in_spanish(app, visit):
    patient = patient_page(app, visit.patient, lang="es")

    reply = patient.emit("call_join", callback=True)

    assert reply == {"ok": False, "code": "not_admitted",
                     "error": "Espere hasta que le dejen entrar."}


def test_the_browser_language_decides_without_a_choice(app, visit):
    patient = patient_page(app, visit.patient, accept_language="pt-BR,pt;q=0.9")

    reply = patient.emit("signal", {"to": "someone", "candidate": {"candidate": "x"}},
                         callback=True)

    assert reply == {"ok": False, "code": "not_in_call", "error": "Você não está na chamada."}


def test_english_stays_english_and_codes_do_not_change(app, visit):
    patient = patient_page(app, visit.patient)

    reply = patient.emit("call_join", callback=True)

    assert reply == {"ok": False, "code": "not_admitted",
                     "error": "Please wait until you are let in."}


def test_each_socket_keeps_its_own_language(app, visit):
    spanish = patient_page(app, visit.patient, lang="es")
    guest = factories.add_participant(visit, "guest")
    portuguese = patient_page(app, guest, lang="pt_BR")

    first = spanish.emit("call_join", callback=True)
    second = portuguese.emit("call_join", callback=True)
    again = spanish.emit("call_join", callback=True)

    assert first["error"] == again["error"] == "Espere hasta que le dejen entrar."
    assert second["error"] == "Aguarde até que deixem você entrar."


def test_a_providers_refusal_is_in_the_providers_language(app, visit):
    client = app.test_client()
    with client.session_transaction() as session:
        session["lang"] = "es"
    staff = staff_socket(app, visit.provider)
    spanish_staff = staff_socket(app, visit.provider, client=client)
    staff.emit("end_visit", callback=True)

    english = staff.emit("admit", {"participant_id": visit.patient.id}, callback=True)
    spanish = spanish_staff.emit("admit", {"participant_id": visit.patient.id}, callback=True)
    name = spanish_staff.emit("add_participant", {"role": "nurse", "display_name": "A"},
                              callback=True)

    assert english == {"ok": False, "code": "visit_ended", "error": "This visit has ended."}
    assert spanish == {"ok": False, "code": "visit_ended", "error": "Esta visita ha terminado."}
    assert name["code"] == "visit_ended"


def test_a_refused_payload_is_worded_in_the_page_language_with_the_field_for_developers(
        app, visit):
    spanish = patient_page(app, visit.patient, lang="es")
    english = patient_page(app, factories.add_participant(visit, "guest"))

    refused = spanish.emit("chat_send", {"text": 7}, callback=True)
    plain = english.emit("chat_send", {"text": 7}, callback=True)

    assert refused["code"] == plain["code"] == "invalid_payload"
    assert refused["error"] == ("Esta página envió algo que no pudimos leer. Vuelva a cargar "
                                "la página e inténtelo de nuevo.")
    assert plain["error"] == ("This page sent something we couldn't read. Reload the page "
                              "and try again.")
    assert refused["detail"] == plain["detail"] and refused["detail"].startswith("text: ")
