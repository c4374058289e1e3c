"""Keep-alive request latency of the gevent server, with and without TCP_NODELAY.

    .venv/bin/python bench/http_latency.py [requests]

Starts the app twice in subprocesses (our NoDelayHandler, then gevent-websocket's plain
handler), sends sequential keep-alive GETs to /healthz and prints p50/p99 for each and
their ratio. Both runs happen in one invocation, so the ratio is what to quote on this
shared, noisy machine.
"""
from __future__ import annotations

import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SERVER = """
from gevent import monkey; monkey.patch_all()
import sys
sys.path.insert(0, {root!r})
from gevent import pywsgi
from geventwebsocket.handler import WebSocketHandler
from app import create_app
from ops.server import NoDelayHandler
app = create_app({{"LOG_LEVEL": "WARNING"}})
handler = NoDelayHandler if sys.argv[1] == "nodelay" else WebSocketHandler
pywsgi.WSGIServer(("127.0.0.1", int(sys.argv[2])), app, handler_class=handler, log=None).serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure(variant: str, count: int) -> list[float]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as instance:
        env = {**os.environ, "VV_INSTANCE_PATH": instance, "VV_LOG_LEVEL": "WARNING"}
        server = subprocess.Popen([sys.executable, "-c", SERVER.format(root=ROOT), variant,
                                   str(port)], env=env, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            connection = http.client.HTTPConnection("127.0.0.1", port)
            timings = []
            for _ in range(count):
                started = time.perf_counter()
                connection.request("GET", "/healthz")
                connection.getresponse().read()
                timings.append((time.perf_counter() - started) * 1000)
            return timings[10:]  # the first requests warm up imports and the connection
        finally:
            server.terminate()
            server.wait()


def _percentile(values: list[float], pct: float) -> float:
    return statistics.quantiles(values, n=100)[int(pct) - 1]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    results = {variant: measure(variant, count) for variant in ("nodelay", "plain")}
    for variant, timings in results.items():
        print(f"{variant:8s} p50 {statistics.median(timings):7.2f} ms   "
              f"p99 {_percentile(timings, 99):7.2f} ms   ({len(timings)} keep-alive requests)")
    ratio = statistics.median(results["plain"]) / statistics.median(results["nodelay"])
    print(f"plain/nodelay p50 ratio: {ratio:.1f}x")


if __name__ == "__main__":
    main()
