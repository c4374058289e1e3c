"""Redis down: joins, admin sign-in and the device test keep working, their rate limits
counted per process; ``/readyz`` says "degraded" and why; the shared counts come back
with Redis. Each test stops and starts a private redis-server, never the shared one."""
from __future__ import annotations

import logging
import uuid

import pytest

from extensions import limiter
from tests import factories
from tests.admin_helpers import create_account, post_login
from tests.conftest import build_app, dispose_app
from tests.redis_server import wait_until

FALLBACK_WARNING = "rate limit storage (Redis) unreachable"


@pytest.fixture
def redis_app(tmp_path, monkeypatch, private_redis):
    application = build_app(tmp_path, monkeypatch, REDIS_URL=private_redis.url,
                            REDIS_CHANNEL=f"vv-test-{uuid.uuid4().hex[:8]}",
                            DEVICE_TEST_RATE_LIMIT="1000 per minute")
    yield application
    dispose_app(application)


def _fallback_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(FALLBACK_WARNING)]


def test_join_sign_in_and_device_test_work_while_redis_is_down(redis_app, private_redis):
    with redis_app.app_context():
        token = factories.join_token(factories.make_visit().patient)
    create_account(redis_app, "ada")
    client = redis_app.test_client()
    assert client.get(f"/j/{token}").status_code == 303
    private_redis.stop()

    joined = client.get(f"/j/{token}")
    signed_in = post_login(redis_app.test_client(), "ada")
    probe = client.get("/device-test/download?bytes=16")

    assert joined.status_code == 303 and joined.headers["Location"].endswith("/join")
    assert signed_in.status_code == 302
    assert probe.status_code == 200 and len(probe.data) == 16
    assert limiter.counting_per_process


def test_readyz_is_degraded_with_the_reason_while_redis_is_down(redis_app, private_redis):
    client = redis_app.test_client()
    assert client.get("/readyz").json == {"status": "ok",
                                          "checks": {"database": "ok", "redis": "ok"}}
    private_redis.stop()

    down = client.get("/readyz")
    private_redis.start()
    back = client.get("/readyz")

    assert down.status_code == 200
    assert down.json["status"] == "degraded"
    assert down.json["checks"] == {"database": "ok", "redis": "down"}
    assert down.json["down"] == ["redis"]
    assert down.json["reasons"]["redis"].startswith("unreachable (ConnectionError)")
    assert "rate limits are counted per process" in down.json["reasons"]["redis"]
    assert back.status_code == 200 and back.json["status"] == "ok"


def test_limits_still_apply_per_process_while_redis_is_down(tmp_path, monkeypatch,
                                                            private_redis):
    app = build_app(tmp_path, monkeypatch, REDIS_URL=private_redis.url,
                    REDIS_CHANNEL=f"vv-test-{uuid.uuid4().hex[:8]}",
                    JOIN_LINK_RATE_LIMIT="3 per minute")
    client = app.test_client()
    private_redis.stop()

    statuses = [client.get(f"/j/guess-{n}-{'z' * 20}").status_code for n in range(4)]

    assert statuses == [404, 404, 404, 429]
    dispose_app(app)


def test_fallback_is_logged_at_most_once_a_minute(redis_app, private_redis, caplog,
                                                  monkeypatch):
    client = redis_app.test_client()
    caplog.set_level(logging.INFO)
    private_redis.stop()

    statuses = [client.get("/device-test/download?bytes=1").status_code for _ in range(10)]
    first_minute = _fallback_warnings(caplog)
    monkeypatch.setattr(limiter, "FALLBACK_WARNING_INTERVAL_SECONDS", 0)
    client.get("/device-test/download?bytes=1")

    assert statuses == [200] * 10
    assert len(first_minute) == 1 and first_minute[0].levelno == logging.WARNING
    assert len(_fallback_warnings(caplog)) > 1  # a minute later (here: no interval), again
    # Flask-Limiter's own line per outage is replaced by ours.
    assert not [r for r in caplog.records if r.name == "flask-limiter"
                and "unreachable" in r.getMessage()]


def test_shared_counts_resume_when_redis_returns(redis_app, private_redis, caplog):
    client = redis_app.test_client()
    caplog.set_level(logging.INFO)
    private_redis.stop()
    assert client.get("/device-test/download?bytes=1").status_code == 200
    assert limiter.counting_per_process

    private_redis.start()

    # Flask-Limiter retries the storage after 1, 2, 4 ... 32 s, on limited requests only.
    wait_until(lambda: client.get("/device-test/download?bytes=1").status_code == 200
               and not limiter.counting_per_process, 90,
               "the limiter to use Redis again", interval=0.5)
    client.get("/device-test/download?bytes=1")
    counters = private_redis.client().keys("*")
    assert counters, "the limit is counted in Redis again"
    assert any(r.getMessage().startswith("rate limit storage is back") for r in caplog.records)
