"""Texts through Twilio: the sender against a local fake of Twilio's REST API over real
HTTP, and Twilio's webhooks (delivery reports, STOP/START/HELP) with real signatures.

The only stand-in is ``tests/twilio_fake.py``; signatures are computed with the SDK's
own ``RequestValidator``, as Twilio computes them.
"""
from __future__ import annotations

import base64
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlsplit
from xml.etree import ElementTree

import flask_migrate
import pytest
from twilio.request_validator import RequestValidator
from werkzeug.serving import make_server

import at_rest
from extensions import db
from notifications import optout
from notifications.models import (
    BODY_PURPOSE,
    PHONE_PURPOSE,
    SmsKind,
    SmsMessage,
    SmsRecipient,
    SmsStatus,
)
from notifications.senders import SendFailed, get_sender
from notifications.twilio_sender import TwilioNotConfigured, TwilioSender
from settings import ConfigError
from tests import factories
from tests.conftest import make_config
from tests.twilio_fake import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioFake
from tests.twilio_fake import twilio_fake  # noqa: F401  (the fixture)
from visits.models import utcnow

PATIENT = "+16085550142"
PUBLIC = "https://visits.example.org"
STATUS_URL = PUBLIC + "/sms/twilio/status"
INBOUND_URL = PUBLIC + "/sms/twilio/inbound"


def twilio_config(fake: TwilioFake, **overrides) -> dict:
    config = {"SMS_SENDER": "twilio", "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
              "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": FROM_NUMBER,
              "TWILIO_API_BASE_URL": fake.url}
    config.update(overrides)
    return config


def sender_for(fake: TwilioFake, **overrides) -> TwilioSender:
    return TwilioSender.from_config(twilio_config(fake, **overrides))


# --- the sender -----------------------------------------------------------------------------

def test_a_text_is_posted_to_twilio_exactly_as_its_api_expects(twilio_fake):
    sender = sender_for(twilio_fake)

    sent = sender.send(to=PATIENT, body="Your video visit is at 10:30. Join: https://v.example/j/x",
                       from_number="+16085550100", status_callback=STATUS_URL)

    request = twilio_fake.requests[-1]
    assert request["method"] == "POST"
    assert request["path"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request["content_type"] == "application/x-www-form-urlencoded"
    expected_auth = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert request["headers"]["Authorization"] == f"Basic {expected_auth}"
    assert request["form"] == {
        "To": PATIENT, "From": "+16085550100", "StatusCallback": STATUS_URL,
        "Body": "Your video visit is at 10:30. Join: https://v.example/j/x"}
    accepted = twilio_fake.messages[0]
    assert sent.provider_message_id == accepted["sid"]
    assert sent.provider_message_id.startswith("SM") and len(sent.provider_message_id) == 34
    assert sent.status == "sent"


def test_the_installation_number_is_used_when_the_endpoint_names_none(twilio_fake):
    sender = sender_for(twilio_fake)

    sender.send(to=PATIENT, body="Hello", from_number=None, status_callback=None)

    assert twilio_fake.requests[-1]["form"] == {"To": PATIENT, "From": FROM_NUMBER,
                                                "Body": "Hello"}


def test_no_sending_number_anywhere_fails_without_calling_twilio(twilio_fake):
    sender = sender_for(twilio_fake, TWILIO_FROM_NUMBER=None)

    with pytest.raises(SendFailed) as failed:
        sender.send(to=PATIENT, body="Hello", from_number=None, status_callback=None)

    assert failed.value.retryable is False
    assert "VV_TWILIO_FROM_NUMBER" in failed.value.reason
    assert twilio_fake.requests == []


@pytest.mark.parametrize(("status", "code", "retryable"), [
    (500, None, True),
    (503, None, True),
    (429, 20429, True),
    (400, 21211, False),  # invalid To
    (400, 21610, False),  # the recipient replied STOP to Twilio
    (400, 21614, False),  # not a mobile number
    (400, 21408, False),  # region not enabled
])
def test_twilio_refusals_are_retryable_only_when_a_retry_can_succeed(twilio_fake, status, code,
                                                                      retryable):
    sender = sender_for(twilio_fake)
    twilio_fake.fail_next(status=status, code=code)

    with pytest.raises(SendFailed) as failed:
        sender.send(to=PATIENT, body="Hello", from_number=None, status_callback=None)

    assert failed.value.retryable is retryable
    assert failed.value.code == (str(code) if code else str(status))
    # Twilio's own messages quote the number; ours never do.
    assert PATIENT not in failed.value.reason and "Hello" not in failed.value.reason
    assert len(failed.value.reason) <= 300
    # The next attempt goes through: the failure was only for one request.
    assert sender.send(to=PATIENT, body="Hello", from_number=None,
                       status_callback=None).provider_message_id.startswith("SM")


def test_a_number_twilio_finds_invalid_is_a_permanent_failure(twilio_fake):
    sender = sender_for(twilio_fake)

    with pytest.raises(SendFailed) as failed:
        sender.send(to="608-555-0142", body="Hello", from_number=None, status_callback=None)

    assert (failed.value.code, failed.value.retryable) == ("21211", False)
    assert "555" not in failed.value.reason
    assert twilio_fake.messages == []


def test_a_wrong_auth_token_is_a_permanent_failure_with_twilios_code(twilio_fake):
    sender = sender_for(twilio_fake, TWILIO_AUTH_TOKEN="0" * 32)

    with pytest.raises(SendFailed) as failed:
        sender.send(to=PATIENT, body="Hello", from_number=None, status_callback=None)

    assert (failed.value.code, failed.value.retryable) == ("20003", False)
    assert "VV_TWILIO_AUTH_TOKEN" in failed.value.reason
    assert twilio_fake.messages == []


def test_twilio_out_of_reach_is_retryable():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = TwilioSender(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                          from_number=FROM_NUMBER, api_base_url=f"http://127.0.0.1:{port}")

    with pytest.raises(SendFailed) as failed:
        sender.send(to=PATIENT, body="Hello", from_number=None, status_callback=None)

    assert (failed.value.code, failed.value.retryable) == ("network", True)


def test_twilio_not_answering_in_time_is_retryable(twilio_fake):
    sender = TwilioSender(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                          from_number=FROM_NUMBER, api_base_url=twilio_fake.url, timeout=0.3)
    twilio_fake.hang_next()

    with pytest.raises(SendFailed) as failed:
        sender.send(to=PATIENT, body="Hello", from_number=None, status_callback=None)

    assert (failed.value.code, failed.value.retryable) == ("timeout", True)


def test_twilio_without_credentials_is_refused_at_start_up(tmp_path):
    with pytest.raises(TwilioNotConfigured, match="VV_TWILIO_AUTH_TOKEN"):
        TwilioSender.from_config({"TWILIO_ACCOUNT_SID": ACCOUNT_SID})
    from app import create_app

    with pytest.raises(ConfigError, match="VV_TWILIO_ACCOUNT_SID"):
        create_app(make_config(tmp_path, SMS_SENDER="twilio", TWILIO_AUTH_TOKEN=AUTH_TOKEN))


# --- webhooks -------------------------------------------------------------------------------

@pytest.fixture
def twilio_app(tmp_path, database_url, twilio_fake, monkeypatch):
    """An app texting through the fake, reachable at PUBLIC (as if behind a proxy: the
    test client's own URL is http://localhost)."""
    from app import create_app

    monkeypatch.chdir(tmp_path)
    app = create_app(make_config(tmp_path, DATABASE_URL=database_url, PUBLIC_BASE_URL=PUBLIC,
                                 **twilio_config(twilio_fake)))
    with app.app_context():
        flask_migrate.upgrade()
        yield app
        db.session.remove()
        db.engine.dispose()


def sent_text(status: str = SmsStatus.SENT, sid: str = "SM" + "ab" * 16) -> SmsMessage:
    """A confirmation already handed to Twilio as ``sid``, for a patient with a phone."""
    visit = factories.make_visit()
    db.session.add(SmsRecipient(participant=visit.patient,
                                phone_encrypted=at_rest.encrypt(PATIENT, PHONE_PURPOSE)))
    message = SmsMessage(appointment=visit.appointment, participant=visit.patient,
                         kind=SmsKind.CONFIRMATION, language="en", scheduled_for=utcnow(),
                         status=status, provider_message_id=sid, sent_at=utcnow(),
                         body_encrypted=at_rest.encrypt("Your visit is booked.", BODY_PURPOSE))
    db.session.add(message)
    db.session.commit()
    return message


def post_signed(client, url: str, params: dict[str, str], token: str = AUTH_TOKEN,
                signature: str | None = None):
    """POST ``params`` to the path (and query) of ``url`` signed as Twilio signs for ``url``."""
    if signature is None:
        signature = RequestValidator(token).compute_signature(url, params)
    parts = urlsplit(url)
    return client.post(parts.path + (f"?{parts.query}" if parts.query else ""), data=params,
                       headers={"X-Twilio-Signature": signature} if signature else {})


def status_report(sid: str, status: str, error_code: str | None = None) -> dict[str, str]:
    params = {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "From": FROM_NUMBER,
              "To": PATIENT, "MessageSid": sid, "SmsSid": sid, "MessageStatus": status,
              "SmsStatus": status}
    if error_code:
        params["ErrorCode"] = error_code
    return params


def reload(message: SmsMessage) -> SmsMessage:
    db.session.rollback()  # end any read, to see what the webhook committed
    return db.session.get(SmsMessage, message.id, populate_existing=True)


def test_a_signed_delivery_report_marks_the_text_delivered(twilio_app):
    message = sent_text()
    client = twilio_app.test_client()

    response = post_signed(client, STATUS_URL, status_report(message.provider_message_id,
                                                              "delivered"))

    assert response.status_code == 200
    row = reload(message)
    assert row.status == SmsStatus.DELIVERED
    assert row.status_updated_at is not None


def test_reports_arriving_out_of_order_never_move_a_text_backwards(twilio_app):
    message = sent_text()
    client = twilio_app.test_client()
    sid = message.provider_message_id

    for status in ("delivered", "sent", "queued", "undelivered"):
        assert post_signed(client, STATUS_URL, status_report(sid, status)).status_code == 200

    row = reload(message)
    assert row.status == SmsStatus.DELIVERED
    assert row.error_code is None


def test_an_undelivered_report_records_twilios_error_code_and_a_reason(twilio_app):
    message = sent_text()
    client = twilio_app.test_client()

    post_signed(client, STATUS_URL, status_report(message.provider_message_id, "undelivered",
                                                  "30006"))

    row = reload(message)
    assert (row.status, row.error_code) == (SmsStatus.FAILED, "30006")
    assert "landline" in row.error_message
    assert PATIENT not in row.error_message


@pytest.mark.parametrize("how", ["missing", "wrong token", "internal url", "altered form"])
def test_an_unsigned_or_badly_signed_report_is_refused(twilio_app, how):
    message = sent_text()
    client = twilio_app.test_client()
    params = status_report(message.provider_message_id, "delivered")
    signature = None
    if how == "missing":
        signature = ""
    elif how == "wrong token":
        signature = RequestValidator("0" * 32).compute_signature(STATUS_URL, params)
    elif how == "internal url":  # what request.url would be behind the proxy
        signature = RequestValidator(AUTH_TOKEN).compute_signature(
            "http://localhost/sms/twilio/status", params)
    else:
        signature = RequestValidator(AUTH_TOKEN).compute_signature(
            STATUS_URL, {**params, "MessageStatus": "failed"})

    response = post_signed(client, STATUS_URL, params, signature=signature)

    assert response.status_code == 403
    assert reload(message).status == SmsStatus.SENT


def test_a_report_for_an_unknown_text_is_acknowledged_and_changes_nothing(twilio_app):
    message = sent_text()
    client = twilio_app.test_client()

    response = post_signed(client, STATUS_URL, status_report("SM" + "cd" * 16, "failed", "30008"))

    assert response.status_code == 200
    assert reload(message).status == SmsStatus.SENT


def test_the_webhooks_do_not_exist_unless_twilio_is_the_sender(client):
    params = status_report("SM" + "ab" * 16, "delivered")

    response = post_signed(client, "http://localhost/sms/twilio/status", params)
    inbound = post_signed(client, "http://localhost/sms/twilio/inbound",
                          {"From": PATIENT, "Body": "STOP"})

    assert (response.status_code, inbound.status_code) == (404, 404)


def inbound(client, body: str, to: str = FROM_NUMBER, sender: str = PATIENT):
    params = {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "MessageSid": "SM" + "ef" * 16,
              "From": sender, "To": to, "Body": body, "NumMedia": "0"}
    return post_signed(client, INBOUND_URL, params)


def twiml_messages(response) -> list[str]:
    assert response.mimetype == "application/xml"
    root = ElementTree.fromstring(response.data)
    assert root.tag == "Response"
    return [element.text or "" for element in root.iter("Message")]


def test_stop_then_start_by_text_opts_the_number_out_and_back_in(twilio_app):
    client = twilio_app.test_client()

    stopped = inbound(client, " stop ")
    opted_out = optout.is_opted_out(PATIENT)
    started = inbound(client, "Start")

    assert stopped.status_code == 200 and opted_out
    assert "no more texts" in twiml_messages(stopped)[0]
    assert started.status_code == 200 and not optout.is_opted_out(PATIENT)
    assert "again" in twiml_messages(started)[0]


def test_help_says_who_we_are_and_how_to_stop(twilio_app):
    client = twilio_app.test_client()

    response = inbound(client, "HELP")

    [reply] = twiml_messages(response)
    assert "Virtual Visits" in reply and "STOP" in reply
    assert not optout.is_opted_out(PATIENT)


def test_any_other_reply_gets_no_answer_and_changes_nothing(twilio_app):
    client = twilio_app.test_client()

    response = inbound(client, "Running 5 minutes late, sorry")

    assert response.status_code == 200
    assert twiml_messages(response) == []
    assert not optout.is_opted_out(PATIENT)


def test_a_forged_stop_is_refused(twilio_app):
    client = twilio_app.test_client()

    response = post_signed(client, INBOUND_URL, {"From": PATIENT, "Body": "STOP"},
                           token="0" * 32)

    assert response.status_code == 403
    assert not optout.is_opted_out(PATIENT)


def test_stop_records_which_clinic_number_was_texted(twilio_app):
    endpoint = factories.make_endpoint("clinic-b")
    endpoint.sms_settings = {"sender_number": "+16085550199"}
    db.session.commit()
    client = twilio_app.test_client()

    inbound(client, "STOP", to="+16085550199")

    from notifications.models import SmsOptOut

    [row] = db.session.scalars(db.select(SmsOptOut)).all()
    assert row.endpoint_id == endpoint.id


def test_a_stop_holds_back_a_text_already_queued_for_that_number(twilio_app, twilio_fake):
    from notifications import sending

    message = sent_text(status=SmsStatus.SCHEDULED, sid=None)
    client = twilio_app.test_client()

    inbound(client, "STOP")
    sending.send_due(utcnow())

    row = reload(message)
    assert row.status == SmsStatus.SUPPRESSED
    assert twilio_fake.messages == []


# --- end to end over real HTTP --------------------------------------------------------------

def _unavailable(environ, start_response):  # pragma: no cover - replaced before serving
    start_response("503 Service Unavailable", [])
    return [b""]


@pytest.fixture
def live_twilio_app(tmp_path, twilio_fake, monkeypatch) -> Iterator:
    """The app served on a loopback port and texting through the fake, so the fake can
    call its StatusCallback over HTTP as Twilio would."""
    from app import create_app

    monkeypatch.chdir(tmp_path)
    server = make_server("127.0.0.1", 0, _unavailable, threaded=True)
    url = f"http://127.0.0.1:{server.port}"
    app = create_app(make_config(tmp_path, PUBLIC_BASE_URL=url, **twilio_config(twilio_fake)))
    with app.app_context():
        flask_migrate.upgrade()
    server.app = app
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    with app.app_context():
        yield app
        db.session.remove()
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()
    with app.app_context():
        db.engine.dispose()


def test_a_due_text_goes_out_through_twilio_and_its_delivery_comes_back(live_twilio_app,
                                                                        twilio_fake, caplog):
    from notifications import sending

    caplog.set_level(logging.DEBUG)
    assert get_sender().name == "twilio"
    message = sent_text(status=SmsStatus.SCHEDULED, sid=None)

    sending.send_due(utcnow())
    sent = reload(message)
    [accepted] = twilio_fake.messages
    forged = twilio_fake.report_status(accepted["sid"], "delivered", auth_token="0" * 32)
    report = twilio_fake.report_status(accepted["sid"], "delivered")

    assert (sent.status, sent.provider_message_id) == (SmsStatus.SENT, accepted["sid"])
    assert (accepted["to"], accepted["from"], accepted["body"]) == (
        PATIENT, FROM_NUMBER, "Your visit is booked.")
    # With our id for this hand-over, so a report can find the text before its SID is kept.
    assert accepted["status_callback"] == live_twilio_app.config["PUBLIC_BASE_URL"] + \
        f"/sms/twilio/status?ref={sent.send_ref}"
    assert forged.status_code == 403
    assert report.status_code == 200
    assert reload(message).status == SmsStatus.DELIVERED
    # Neither the number nor the text reached the log on the way out or back.
    logged = "\n".join(str(vars(record)) for record in caplog.records)  # with the extras
    assert "sms status updated" in logged
    assert PATIENT.lstrip("+") not in logged and "Your visit is booked" not in logged


def test_a_failed_attempt_is_retried_after_backing_off(live_twilio_app, twilio_fake):
    from notifications import sending

    message = sent_text(status=SmsStatus.SCHEDULED, sid=None)
    twilio_fake.fail_next(status=503)
    now = utcnow()

    sending.send_due(now)
    waiting = reload(message)
    waiting_state = (waiting.status, waiting.attempts, waiting.error_code)
    sending.send_due(waiting.next_attempt_at + timedelta(seconds=1))

    assert waiting_state == (SmsStatus.SCHEDULED, 1, "503")
    assert reload(message).status == SmsStatus.SENT
    assert len(twilio_fake.messages) == 1
