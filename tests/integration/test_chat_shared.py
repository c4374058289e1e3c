"""Chat shared through Redis (several processes): any process reads what another took; a
Redis outage keeps messages in the process that took them, and they join the history
when Redis is back; an ended visit's chat is deleted from Redis. A private redis-server,
never the shared one."""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from extensions import db
from tests import factories
from tests.conftest import build_app, dispose_app
from visits import chat

CHANNEL = f"vv-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def redis_app(tmp_path, monkeypatch, private_redis):
    chat.reset_for_tests()
    application = build_app(tmp_path, monkeypatch, REDIS_URL=private_redis.url,
                            REDIS_CHANNEL=CHANNEL)
    yield application
    chat.reset_for_tests()
    dispose_app(application)


def _admitted_patient(visit):
    visit.patient.admitted_at = datetime.now(timezone.utc)
    db.session.commit()
    return visit.patient


def test_another_process_reads_what_this_one_took(redis_app, private_redis):
    with redis_app.app_context():
        visit = factories.make_visit()
        now = datetime.now(timezone.utc)
        chat.send(visit.provider, "Running 5 minutes late", now, staff=True)
        chat.send(_admitted_patient(visit), "OK", now + timedelta(seconds=1), staff=False)
        chat.reset_for_tests()  # this process's memory gone: what is left is Redis's

        kept = chat.history(visit.provider, staff=True)

        assert [m.text for m in kept] == ["Running 5 minutes late", "OK"]
        assert kept[0].to_lobby and kept[0].participant_id == visit.provider.id
        # What a page's chat_history reads first: the whole chat, from Redis.
        assert len(chat.messages(visit.appointment.id)) == 2
        key = f"{CHANNEL}:chat:{visit.appointment.id}"
        # Gone by itself 12 hours after the last message, if nobody ends the visit.
        assert 0 < private_redis.client().ttl(key) <= chat.IDLE_HOURS * 3600


def test_an_outage_keeps_messages_here_and_they_join_the_history_after(
        redis_app, private_redis, caplog):
    with redis_app.app_context():
        visit = factories.make_visit()
        now = datetime.now(timezone.utc)
        chat.send(visit.provider, "first", now, staff=True)
        private_redis.stop()
        caplog.set_level(logging.WARNING, logger="visits.chat")

        sent, _audience = chat.send(visit.provider, "during", now + timedelta(seconds=1),
                                    staff=True)
        chat.send(visit.provider, "still during", now + timedelta(seconds=2), staff=True)
        during = chat.history(visit.provider, staff=True)
        private_redis.start()  # empty: it kept nothing on disk
        chat.send(visit.provider, "after", now + timedelta(seconds=3), staff=True)
        after = chat.history(visit.provider, staff=True)

    assert sent.text == "during"
    assert [m.text for m in during] == ["during", "still during"]
    assert [m.text for m in after] == ["during", "still during", "after"]
    warnings = [r for r in caplog.records if r.getMessage().startswith("chat kept")]
    assert len(warnings) == 1  # at most once a minute, never the text
    assert "during" not in caplog.text


def test_ending_the_visit_deletes_its_chat_from_redis(redis_app, private_redis):
    from visits import lobby

    with redis_app.app_context():
        visit = factories.make_visit()
        chat.send(visit.provider, "before the end", datetime.now(timezone.utc), staff=True)
        key = f"{CHANNEL}:chat:{visit.appointment.id}"
        assert private_redis.client().exists(key)

        lobby.end_visit(visit.appointment.id, visit.provider.id, datetime.now(timezone.utc))

        assert not private_redis.client().exists(key)
        assert chat.history(visit.provider, staff=True) == []
