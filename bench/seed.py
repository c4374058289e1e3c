"""Seed a benchmark database with the product's own functions and write the driver's manifest.

Each visit is an appointment happening now with a provider and a patient: the provider
holds a launch session (the signed session cookie a SMART launch would leave in the
browser), the patient a join link (the token a text message would carry). The EHR
endpoint points at the FHIR stand-in, so write-backs go there.

    python bench/seed.py --database-url sqlite:////tmp/b/app.db --visits 3000 --probes 300 \
        --fhir-base http://127.0.0.1:5190/fhir --out /tmp/b/manifest.json
Environment: the same VV_* settings the server will run with (VV_SECRET_KEY above all).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flask_migrate  # noqa: E402

from app import create_app  # noqa: E402
from ehr import keys  # noqa: E402
from ehr.services import ensure_endpoint  # noqa: E402
from extensions import db  # noqa: E402
from provider_launch.auth import SESSION_KEY, create_launch_session  # noqa: E402
from visits.links import add_join_link  # noqa: E402
from visits.models import Appointment, Participant, utcnow  # noqa: E402

BATCH = 500


def seed(visits: int, probes: int, fhir_base: str) -> dict:
    app = create_app()
    with app.app_context():
        flask_migrate.upgrade()
        keys.rotate()
        endpoint = ensure_endpoint("bench", fhir_base, client_id="virtual-visits-bench",
                                   scopes="launch openid fhirUser", approved_by="bench")
        serializer = app.session_interface.get_signing_serializer(app)
        now = utcnow().replace(microsecond=0)
        made = []
        for start in range(0, visits + probes, BATCH):
            batch = []
            for index in range(start, min(start + BATCH, visits + probes)):
                appointment = Appointment(
                    endpoint=endpoint, ehr_appointment_id=f"bench-{index}", start_at=now,
                    end_at=now + timedelta(hours=3), timezone="America/Chicago",
                    department_display="Family Medicine")
                provider = Participant(appointment=appointment, role="provider",
                                       ehr_user_id=f"Practitioner/bench-dr-{index}",
                                       display_name="Dr. Bench")
                patient = Participant(appointment=appointment, role="patient",
                                      ehr_user_id=f"Patient/bench-pt-{index}")
                db.session.add_all([appointment, provider, patient])
                db.session.flush()
                token = add_join_link(patient)
                raw = create_launch_session(
                    endpoint=endpoint, appointment=appointment, participant=provider,
                    fhir_user=provider.ehr_user_id, patient_ref=patient.ehr_user_id,
                    encounter_ref=None, access_token=None, scope="launch openid",
                    expires_in=6 * 3600, now=now)
                cookie = serializer.dumps({SESSION_KEY: {str(appointment.id): raw}})
                batch.append({"appointment_id": appointment.id, "patient_id": patient.id,
                              "provider_cookie": f"{app.config['SESSION_COOKIE_NAME']}={cookie}",
                              "patient_token": token})
            db.session.commit()
            made.extend(batch)
        db.session.remove()
        db.engine.dispose()
    return {"visits": made[:visits], "probes": made[visits:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, required=True)
    parser.add_argument("--probes", type=int, default=0)
    parser.add_argument("--fhir-base", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    manifest = seed(args.visits, args.probes, args.fhir_base)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)


if __name__ == "__main__":
    main()
