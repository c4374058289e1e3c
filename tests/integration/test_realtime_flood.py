"""One socket flooding events must not slow everyone else: against the real server
(``python app.py`` under gevent, as tests/browser starts it), a flooder in its own
process sends 10,000 events as fast as it can while ten other sockets measure their
``ping_server`` round trips. Raw Engine.IO/Socket.IO frames over websocket-client, so the
clients cost little and measure the server, not themselves.

Run with ``-s`` to see the figures (one JSON line per run: others' round trips before,
during and after the flood, and what the flooder sent and heard back)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import websocket

from tests.browser.conftest import free_port, start_server, stop_server

FLOOD_EVENTS = 10_000
PINGERS = 10
PING_EVERY_SECONDS = 0.1
P99_LIMIT_MS = 50.0
# On a loaded machine (other test workers, benchmarks) the others' round trips are slow
# before the flood starts too; the flood may then cost them at most this many times their
# own quiet-second p99. The unlimited server held them up for 5 s.
LOADED_FACTOR = 4.0

# The flooder: connect, say "ready", wait for a line on stdin, send every event without
# reading, then report what it sent and what came back before the server closed it.
FLOODER = r"""
import json, sys, time, websocket
url, count = sys.argv[1], int(sys.argv[2])
ws = websocket.create_connection(url, timeout=10)
ws.recv()
ws.send("40")
while not ws.recv().startswith("40"):
    pass
frames = ['42%d["ping_server",{}]' % n for n in range(count)]
print("ready", flush=True)
sys.stdin.readline()
sent, started = 0, time.perf_counter()
try:
    for frame in frames:
        ws.send(frame)
        sent += 1
except Exception:
    pass
seconds = time.perf_counter() - started
acks = told = 0
# Cut off: the server's disconnect packet, or its close or reset of the connection (closing
# with our frames still unread in its buffer, the kernel may reset the connection before
# the disconnect packet is read here). Three quiet seconds mean it is still connected.
disconnected = sent < count
ws.settimeout(3)
try:
    while True:
        message = ws.recv()
        if not message:
            disconnected = True
            break
        if message.startswith("43"):
            acks += 1
        elif message.startswith('42["rate_limited"'):
            told += 1
        elif message.startswith("41"):
            disconnected = True
except websocket.WebSocketTimeoutException:
    pass
except Exception:
    disconnected = True
print(json.dumps({"sent": sent, "seconds": seconds, "acks": acks, "told": told,
                  "disconnected": disconnected}), flush=True)
"""


def _ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"


def _connect(base: str, auth: dict | None = None) -> tuple[websocket.WebSocket, str]:
    """A Socket.IO connection on the default namespace; the server's answer to CONNECT."""
    ws = websocket.create_connection(_ws_url(base), timeout=10)
    ws.recv()  # Engine.IO open
    ws.send("40" + (json.dumps(auth) if auth else ""))
    while True:
        answer = ws.recv()
        if answer.startswith(("40", "44")):
            return ws, answer


class Pinger(threading.Thread):
    """Pings every PING_EVERY_SECONDS (well within the per-socket limit) and keeps
    (sent at, round trip ms) for each ping."""

    def __init__(self, base: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.ws, _ = _connect(base)
        self.stop = stop
        self.samples: list[tuple[float, float]] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            started = time.perf_counter()
            self.ws.send('42%d["ping_server",{}]' % n)
            while True:
                message = self.ws.recv()
                if message == "2":  # Engine.IO ping: answer it
                    self.ws.send("3")
                elif message.startswith("43%d[" % n):
                    break
            self.samples.append((started, (time.perf_counter() - started) * 1000))
            time.sleep(max(0.0, PING_EVERY_SECONDS - (time.perf_counter() - started)))
        self.ws.close()


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def measure_flood(base: str, events: int = FLOOD_EVENTS) -> dict:
    """Others' round trips while one socket floods ``events``; the flooder's report."""
    stop = threading.Event()
    pingers = [Pinger(base, stop) for _ in range(PINGERS)]
    flooder = subprocess.Popen([sys.executable, "-c", FLOODER, _ws_url(base), str(events)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert flooder.stdout.readline().strip() == "ready"
        for pinger in pingers:
            pinger.start()
        time.sleep(1.0)  # a quiet second first: the baseline
        flood_started = time.perf_counter()
        flooder.stdin.write("go\n")
        flooder.stdin.flush()
        report = json.loads(flooder.stdout.readline())
        time.sleep(1.0)  # and a second after it
    finally:
        stop.set()
        for pinger in pingers:
            pinger.join(timeout=5)
        flooder.kill()
    flood_ended = flood_started + report["seconds"]
    during = [ms for pinger in pingers for at, ms in pinger.samples
              if flood_started <= at <= flood_ended + 0.5]
    # The quiet second: round trips over before the flood began (one it held up is not).
    before = [ms for pinger in pingers for at, ms in pinger.samples
              if at + ms / 1000 < flood_started]
    everything = [ms for pinger in pingers for _at, ms in pinger.samples]
    return {"flooder": report, "pings_during": len(during),
            "during_p50_ms": statistics.median(during) if during else None,
            "during_p99_ms": _p99(during) if during else None,
            "during_max_ms": max(during) if during else None,
            "before_p99_ms": _p99(before) if before else None,
            "all_p99_ms": _p99(everything), "all_max_ms": max(everything),
            "pings": len(everything)}


def allowed_p99_ms(run: dict) -> float:
    """The most the others' p99 round trip may reach during the flood: 50 ms, or on a
    machine already slow before the flood, a few times what it was then."""
    return max(P99_LIMIT_MS, LOADED_FACTOR * (run["before_p99_ms"] or 0.0))


def least_disturbed_flood(base: str, tries: int = 3) -> dict:
    """``measure_flood`` until others' p99 is within what is allowed, at most ``tries``
    times; the run that came closest. The machine is shared (other test runs,
    benchmarks), and a busy neighbour alone can push a round trip past 50 ms; what the
    server does to a flood shows in its best run."""
    runs = []
    for _ in range(tries):
        runs.append(measure_flood(base))
        print(f"\n{json.dumps(runs[-1])}")
        if _during_p99(runs[-1]) < allowed_p99_ms(runs[-1]):
            break
    return min(runs, key=lambda run: _during_p99(run) / allowed_p99_ms(run))


def _during_p99(run: dict) -> float:
    """The others' p99 while the flood ran; none got through at all counts as a stall."""
    return run["during_p99_ms"] if run["during_p99_ms"] is not None else float("inf")


def _server(tmp_path_factory, name: str, **env: str):
    extra = {"VV_REDIS_URL": os.environ["REDIS_URL"],
             "VV_REDIS_CHANNEL": f"vv-test-{free_port()}"} if os.environ.get("REDIS_URL") else {}
    return start_server(Path(tmp_path_factory.mktemp(name)), **extra, **env)


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    """The limits as shipped; a small join-guess limit for the guessing test."""
    server = _server(tmp_path_factory, "flood-defaults", VV_JOIN_LINK_RATE_LIMIT="3 per minute")
    yield server
    stop_server(server)


def test_a_flooding_socket_is_cut_off_and_others_keep_their_round_trips(default_server):
    result = least_disturbed_flood(default_server.url)

    flooder = result["flooder"]
    assert flooder["told"] >= 1 and flooder["disconnected"] is True
    # The burst (200), and what the rate (20 a second) refilled while the flood was sent
    # and read: 0.07 s on a quiet machine, 0.49 s beside a CPU loop (208 answered then).
    assert flooder["acks"] <= 200 + 20 * (flooder["seconds"] + 1)
    assert _during_p99(result) < allowed_p99_ms(result)
    assert "socket disconnected for flooding" in default_server.log_text()


def test_socket_join_token_guesses_share_the_link_guess_limit(default_server):
    answers = []
    for n in range(4):
        ws, answer = _connect(default_server.url, {"join_token": f"guess-{n}-{'q' * 30}"})
        ws.close()
        answers.append(answer)

    web = requests.get(f"{default_server.url}/j/guess-web-{'q' * 30}", allow_redirects=False)

    assert answers[:3] == ['44{"message":"not_authorized"}'] * 3
    assert answers[3] == '44{"message":"too_many_attempts"}'
    assert web.status_code == 429 and int(web.headers["Retry-After"]) > 0


@pytest.fixture(scope="module")
def never_disconnect_server(tmp_path_factory):
    """Sockets are never cut off, so all 10,000 events reach the server and are dropped."""
    server = _server(tmp_path_factory, "flood-drops", VV_SOCKET_EVENT_DROP_LIMIT="0")
    yield server
    stop_server(server)


def test_ten_thousand_dropped_events_do_not_hold_the_others_up(never_disconnect_server):
    result = least_disturbed_flood(never_disconnect_server.url)

    flooder = result["flooder"]
    assert flooder["sent"] == FLOOD_EVENTS and flooder["disconnected"] is False
    assert flooder["acks"] < 1000  # the burst and the rate while the flood is read
    assert result["pings_during"] > 0
    assert _during_p99(result) < allowed_p99_ms(result)
