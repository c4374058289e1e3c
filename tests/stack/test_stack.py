"""The production-shaped stack (tests/stack/conftest.py) end to end over https: nginx,
2 gunicorn workers, PostgreSQL, Redis, coturn; and the provider's launch inside a
cross-site EHR frame. One file, so pytest-xdist (--dist loadfile) boots one stack."""
from __future__ import annotations

import base64
import json
import os
import re
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.sync_api import expect

from tests.redis_server import wait_until
from tests.stack.helpers import (
    PHONE,
    expect_in_call,
    join_from_link,
    launch_from_schedule,
    relay_context,
    relayed,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

HL7_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "hl7" / \
    "siu_s12_rethinkhealth_epiclike_v251.hl7"


def sockets_by_role(stack, appointment_id: int) -> dict[str, set[int]]:
    """The gunicorn worker pids holding each role's open sockets (``live_sockets``)."""
    rows = stack.sql("SELECT p.role, s.process_id FROM live_sockets s JOIN participants p "
                     "ON p.id = s.participant_id WHERE p.appointment_id = :appointment",
                     appointment=appointment_id)
    found: dict[str, set[int]] = {}
    for role, process_id in rows:
        found.setdefault(role, set()).add(int(process_id.split(":")[1]))
    return found


def one_socket_each(stack, appointment_id: int) -> dict[str, set[int]] | None:
    found = sockets_by_role(stack, appointment_id)
    if len(found.get("provider", ())) == 1 and len(found.get("patient", ())) == 1:
        return found
    return None


def test_texted_patient_admitted_to_a_relayed_call_survives_a_worker_kill(stack, stack_browser):
    provider_context = relay_context(stack_browser)
    patient_context = relay_context(stack_browser, **PHONE)
    provider, patient = provider_context.new_page(), patient_context.new_page()
    try:
        # The EHR books the visit: its signed SIU over https through nginx; the app texts.
        provider.goto(stack.url + "/sandbox")
        row = provider.locator('[data-testid="sandbox-appointment"][data-appointment-id="appt-1"]')
        row.get_by_test_id("sandbox-send-hl7").click()
        result = provider.get_by_role("status")
        result.wait_for()
        assert result.get_attribute("data-ack-code") == "AA", result.inner_text()
        text_link = provider.locator('[data-testid="sandbox-sms"]').get_by_role("link").last
        text_link.wait_for()
        texted = text_link.get_attribute("href")
        assert texted.startswith(stack.url + "/j/")
        appointment_id = launch_from_schedule(provider, stack.url, "appt-1")
        patient_row = provider.locator('[data-testid="participant"][data-role="patient"]')

        lobby = join_from_link(patient, texted)

        # Presence across workers: the provider's page and the patient's socket on
        # different gunicorn workers (the provider's page reconnects until they are).
        for _attempt in range(12):
            expect(patient_row).to_have_attribute("data-presence", "connected")
            held = wait_until(lambda: one_socket_each(stack, appointment_id), 20,
                              "one socket for each side")
            if held["provider"] != held["patient"]:
                break
            provider.reload()
        else:
            pytest.fail(f"the two sockets always landed on one worker: {held}")
        assert set(stack.worker_pids()) >= held["provider"] | held["patient"]

        provider.get_by_test_id("admit").click()

        expect(lobby).to_have_attribute("data-state", "admitted")
        expect_in_call(patient)
        expect_in_call(provider)
        for side in (patient, provider):
            pairs = relayed(side)
            assert pairs and all(pair == ["relay", "relay"] for pair in pairs), pairs

        # One worker dies mid-visit: the one holding the patient's socket.
        (victim,) = held["patient"]
        os.kill(victim, signal.SIGKILL)

        def moved():
            found = sockets_by_role(stack, appointment_id).get("patient", set())
            return found and victim not in found and found
        now_on = wait_until(moved, 45, "the patient's page to reconnect to a live worker")
        assert victim not in now_on
        expect(patient_row).to_have_attribute("data-presence", "connected", timeout=30_000)
        expect(lobby).to_have_attribute("data-state", "admitted")
        expect_in_call(patient)
        expect_in_call(provider)
        wait_until(lambda: len(stack.worker_pids()) == 2 and victim not in stack.worker_pids(),
                   30, "gunicorn to replace the killed worker")
    except Exception:
        print(stack.diagnostics())
        raise
    finally:
        provider_context.close()
        patient_context.close()


def _signing_pair(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    import datetime as dt

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stack-test interface engine")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(hours=1))
                   .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    path = tmp_path / "engine.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key, path


def test_signed_hl7_over_https_and_the_proxy_body_limits(stack, tmp_path):
    key, certificate = _signing_pair(tmp_path)
    stack.flask("certs", "add", "sandbox", str(certificate))
    body = HL7_SAMPLE.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    signature = base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    url = f"{stack.url}/hl7/v2/sandbox"

    with stack.http() as http:
        signed = http.post(url, data=body, headers={"X-Signature": signature}, timeout=20)
        forged = http.post(url, data=body + b"X", headers={"X-Signature": signature},
                           timeout=20)
        too_big = http.post(url, data=b"x" * (1024 * 1024 + 1),
                            headers={"X-Signature": signature}, timeout=20)
        results_too_big = http.post(f"{stack.url}/device-test/results", data=b"{" * 70_000,
                                    headers={"Content-Type": "application/json"}, timeout=20)

    assert signed.status_code == 200
    assert re.search(r"(^|\r)MSA\|A[AER]\|", signed.text), signed.text
    assert forged.status_code == 401
    assert too_big.status_code == 413 and "nginx" in too_big.text  # refused before the app
    assert results_too_big.status_code == 413 and "nginx" in results_too_big.text


def test_static_files_come_from_nginx_immutable_and_pages_from_the_app(stack):
    with stack.http() as http:
        page = http.get(f"{stack.url}/device-test", timeout=20,
                        headers={"Accept-Encoding": "gzip"})
        script = re.search(r'src="(/static/device_test/device_test\.js\?v=[0-9a-f]{12})"',
                           page.text)
        assert script, "the device test page names its fingerprinted script"
        static = http.get(stack.url + script.group(1), timeout=20,
                          headers={"Accept-Encoding": "gzip"})
        unversioned = http.get(f"{stack.url}/static/device_test/device_test.js", timeout=20)

    # The app's page: its own security headers once each, nginx's HSTS, compressed.
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    assert page.headers["Content-Encoding"] == "gzip"
    assert page.headers["X-Content-Type-Options"] == "nosniff"  # once (requests joins repeats)
    # The fingerprinted script: from the export by nginx, precompressed, immutable.
    assert static.status_code == 200
    assert static.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert static.headers["Content-Encoding"] == "gzip"
    assert static.headers["Content-Type"].startswith("text/javascript")
    assert "Last-Modified" in static.headers  # nginx's file headers, not the app's ETag
    assert script.group(1).rsplit("=", 1)[1] not in static.headers.get("ETag", "")
    assert "?v=" in static.text  # its imports name fingerprinted URLs too
    # Without the fingerprint: the app's current file, with a short cache.
    assert unversioned.headers["Cache-Control"] == "public, max-age=60"

# --- the launch embedded in an EHR page of another site (issue 15, item 6) --------------
#
# https://ehr.test frames the sandbox's "Start virtual visit" URL on https://vv.test, its
# origin configured as the endpoint's frame origin (conftest.py). Chromium keeps its
# default cookie settings, which block third-party cookies: the session cookie lives in
# the frame only because it is Partitioned (CHIPS). Launch, visit page, presence, admit
# and a relay-only call all happen inside the frame.

SANDBOX_ID = "appt-2"  # appt-1 is the other test's; this one is moved to now
EHR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>EHR</title></head>
<body><h1>Fake EHR: today's schedule</h1>
<iframe title="Virtual visit" src="{src}" allow="camera; microphone; autoplay; fullscreen"
        width="1100" height="760"></iframe>
</body></html>
"""


def reschedule_to_now(stack, sandbox_id: str) -> None:
    """Move a sandbox appointment (in its PostgreSQL tables) so its waiting room is open."""
    (body,) = stack.sql("SELECT body FROM sandbox_resource WHERE type = 'Appointment' "
                        "AND id = :id", id=sandbox_id)[0]
    resource = body if isinstance(body, dict) else json.loads(body)
    start = datetime.now(UTC)
    resource["start"] = start.isoformat()
    resource["end"] = (start + timedelta(minutes=30)).isoformat()
    stack.sql("UPDATE sandbox_resource SET body = CAST(:body AS JSON) WHERE type = "
              "'Appointment' AND id = :id", body=json.dumps(resource), id=sandbox_id)


def patient_link(stack, appointment_id: int) -> str:
    visits = json.loads(stack.flask("appointments", "list", "--json"))
    visit = next(v for v in visits if v["id"] == appointment_id)
    patient = next(p for p in visit["participants"] if p["role"] == "patient")
    token = json.loads(stack.flask("links", "create", str(patient["id"]), "--json"))["token"]
    return f"{stack.url}/j/{token}"


def test_launch_visit_presence_admit_and_call_inside_a_cross_site_ehr_frame(
        stack, stack_browser):
    reschedule_to_now(stack, SANDBOX_ID)
    (stack.workdir / "ehr" / "index.html").write_text(EHR_PAGE.format(
        src=f"{stack.url}/sandbox/launch/provider/{SANDBOX_ID}"))
    provider_context = relay_context(stack_browser, viewport={"width": 1280, "height": 900})
    patient_context = relay_context(stack_browser, **PHONE)
    ehr, patient = provider_context.new_page(), patient_context.new_page()
    try:
        ehr.goto(f"{stack.ehr_url}/index.html")
        frame = ehr.frame_locator("iframe")
        provider_row = frame.locator('[data-testid="participant"][data-role="provider"]')
        expect(provider_row).to_have_attribute("data-presence", "connected", timeout=30_000)
        visit = next(f for f in ehr.frames if re.search(r"/visit/\d+$", f.url))
        assert visit.url.startswith(stack.url) and ehr.url.startswith(stack.ehr_url)
        appointment_id = int(visit.url.rsplit("/", 1)[1])
        # The defaults this proves CHIPS against: an unpartitioned cookie set in the frame is
        # a third-party cookie, and Chromium drops it; the session cookie is partitioned.
        dropped = visit.evaluate("""() => {
          document.cookie = "probe=1; SameSite=None; Secure; Path=/";
          return !document.cookie.includes("probe=1");
        }""")
        assert dropped, "Chromium kept an unpartitioned third-party cookie"
        session = [c for c in provider_context.cookies(stack.url) if c["name"] == "session"]
        assert session and all(c.get("partitionKey") for c in session), session

        lobby = join_from_link(patient, patient_link(stack, appointment_id))

        patient_row = frame.locator('[data-testid="participant"][data-role="patient"]')
        expect(patient_row).to_have_attribute("data-presence", "connected")
        frame.get_by_test_id("admit").click()
        expect(lobby).to_have_attribute("data-state", "admitted")
        expect_in_call(visit)
        expect_in_call(patient)
        pairs = relayed(visit)
        assert pairs and all(pair == ["relay", "relay"] for pair in pairs), pairs
    except Exception:
        print(stack.diagnostics())
        print("provider console:", *provider_context.console, sep="\n  ")
        print("patient console:", *patient_context.console, sep="\n  ")
        for name, scope in (("provider frame", ehr.frames[-1]), ("patient", patient)):
            print(name, "peer connections:", scope.evaluate(
                "() => (window.__peerConnections || []).map((pc) => "
                "[pc.signalingState, pc.iceGatheringState, pc.connectionState])"))
        ehr.screenshot(path=str(stack.workdir / "ehr-frame-failure.png"))
        patient.screenshot(path=str(stack.workdir / "patient-failure.png"))
        raise
    finally:
        provider_context.close()
        patient_context.close()
