"""Throughput and server CPU of the patient's join page, ``GET /join``, in one gevent process.

    .venv/bin/python bench/join_page.py [--patients 1] [--seconds 5] [--connections 16]
                                        [--lang en] [--log-level INFO] [--runs 1]
                                        [--encoding identity|gzip|br]

Seeds a throw-away SQLite database with one visit per patient (bench/seed.py), starts
``python app.py`` on a free port as production does (access log at INFO by default,
written to a file), opens each patient's join link once for their session cookie, then
drives ``GET /join`` closed-loop over keep-alive connections, each request with the next
patient's cookie: with ``wrk`` when it is installed (apt-get install wrk), else with a
small Python client in another process, which needs a core of this 2-core box itself, so
the server is not kept busy and both figures come out worse. ``--encoding`` sends that
``Accept-Encoding`` (the page is then compressed per request: ops/compression.py). One patient is one page
reloaded; ``--patients 200`` spreads the same load over 200 visits and session cookies.

Prints requests/s and the server's CPU per request (utime + stime from /proc/<pid>/stat
over the run, divided by the requests answered), the idle server's CPU before (background
loops, counted in the runs too). Other work shares the machine and only adds to the CPU
figure: quote the lowest of a few runs, and re-run before quoting requests/s.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")
# Nothing listens there: the page never calls the EHR, and write-backs just fail.
FHIR_BASE = "http://127.0.0.1:9/fhir"

# The fallback load generator: N keep-alive connections, one request in flight on each,
# a minimal HTTP/1.1 reader (Content-Length bodies only, which is what /join answers).
CLIENT = r"""
import socket, sys, threading, time
port, lang, connections, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
coding = "" if sys.argv[5] == "identity" else f"Accept-Encoding: {sys.argv[5]}\r\n"
requests = [(f"GET /join HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
             f"Accept-Language: {lang}\r\n{coding}\r\n").encode() for cookie in sys.argv[6:]]
done, bad = [0] * connections, [0] * connections
deadline = time.monotonic() + seconds
def run(slot):
    sock = socket.create_connection(("127.0.0.1", int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = b""
    while time.monotonic() < deadline:
        sock.sendall(requests[(done[slot] * connections + slot) % len(requests)])
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        while len(buffer) < length:
            buffer += sock.recv(65536)
        buffer = buffer[length:]
        done[slot] += 1
        bad[slot] += not head.startswith(b"HTTP/1.1 200")
    sock.close()
threads = [threading.Thread(target=run, args=(slot,)) for slot in range(connections)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(sum(done), sum(bad))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds the process has used."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS  # utime, stime


def _wait_for(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        if server.poll() is not None:
            raise RuntimeError("the server exited during start-up")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _session_cookie(connection: http.client.HTTPConnection, token: str) -> tuple[str, int]:
    """Open the join link as the patient's phone would: the cookie, and /join's size."""
    connection.request("GET", f"/j/{token}")
    response = connection.getresponse()
    response.read()
    cookie = response.getheader("Set-Cookie", "").split(";", 1)[0]
    if response.status != 303 or not cookie:
        raise RuntimeError(f"the join link answered {response.status}")
    connection.request("GET", "/join", headers={"Cookie": cookie})
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"/join answered {response.status}")
    return cookie, len(body)


def _wrk_script(folder: str, cookies: list[str], lang: str, encoding: str) -> str:
    """A wrk script sending each request with the next patient's cookie."""
    path = os.path.join(folder, "join.lua")
    listed, language = ", ".join(json.dumps(cookie) for cookie in cookies), json.dumps(lang)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"local cookies = {{{listed}}}\n"
                     "local sent = 0\n"
                     "request = function()\n"
                     "  sent = sent + 1\n"
                     "  return wrk.format(\"GET\", \"/join\", {[\"Cookie\"] = "
                     f"cookies[sent % #cookies + 1], [\"Accept-Language\"] = {language}"
                     + (f", [\"Accept-Encoding\"] = {json.dumps(encoding)}"
                        if encoding != "identity" else "") + "})\n"
                     "end\n")
    return path


def _drive(port: int, cookies: list[str], lang: str, connections: int, seconds: int,
           folder: str, encoding: str = "identity") -> tuple[int, int]:
    """Closed-loop load on /join; returns (requests answered, non-200 answers)."""
    if shutil.which("wrk"):
        result = subprocess.run(
            ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s",
             "-s", _wrk_script(folder, cookies, lang, encoding),
             f"http://127.0.0.1:{port}/join"],
            capture_output=True, text=True, check=True)
        total = int(re.search(r"(\d+) requests in", result.stdout).group(1))
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
        return total, int(non_2xx.group(1)) if non_2xx else 0
    result = subprocess.run(
        [sys.executable, "-c", CLIENT, str(port), lang, str(connections), str(seconds),
         encoding, *cookies], capture_output=True, text=True, check=True)
    total, bad = result.stdout.split()
    return int(total), int(bad)


def measure(patients: int, seconds: int, connections: int, lang: str, log_level: str,
            runs: int, encoding: str = "identity") -> None:
    port = _free_port()
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "VV_DATABASE_URL": f"sqlite:///{folder}/app.db",
               "VV_SECRET_KEY": "bench-secret-key-0123456789abcdefghijkl",
               "VV_INSTANCE_PATH": folder, "VV_SANDBOX": "0", "VV_PORT": str(port),
               "VV_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
               "VV_JOIN_LINK_RATE_LIMIT": "1000000 per minute", "VV_LOG_LEVEL": log_level}
        env.pop("VV_REDIS_URL", None)
        manifest = os.path.join(folder, "manifest.json")
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "seed.py"), "--visits",
                        str(patients), "--fhir-base", FHIR_BASE, "--out", manifest], env=env,
                       check=True, stderr=subprocess.DEVNULL)
        with open(manifest, encoding="utf-8") as handle:
            tokens = [visit["patient_token"] for visit in json.load(handle)["visits"]]
        with open(os.path.join(folder, "server.log"), "wb") as log_file:
            server = subprocess.Popen([sys.executable, os.path.join(ROOT, "app.py")], env=env,
                                      cwd=ROOT, stdout=log_file, stderr=log_file)
            try:
                _wait_for(port, server)
                connection = http.client.HTTPConnection("127.0.0.1", port)
                cookies, sizes = zip(*(_session_cookie(connection, token) for token in tokens))
                connection.close()
                _drive(port, cookies, lang, connections, 1, folder, encoding)  # warm-up
                idle_before = sum(_cpu_seconds(server.pid))
                time.sleep(1)
                idle_ms = (sum(_cpu_seconds(server.pid)) - idle_before) * 1000
                print(f"/join: {max(sizes)} bytes, {patients} patient(s), lang {lang}, "
                      f"log level {log_level}, Accept-Encoding {encoding}, "
                      f"{connections} connections, {seconds:g} s per run, "
                      f"{'wrk' if shutil.which('wrk') else 'python client'}; "
                      f"idle server CPU {idle_ms:.0f} ms/s")
                for _ in range(runs):
                    (user, system), started = _cpu_seconds(server.pid), time.monotonic()
                    total, bad = _drive(port, cookies, lang, connections, seconds, folder,
                                        encoding)
                    elapsed = time.monotonic() - started
                    user_after, system_after = _cpu_seconds(server.pid)
                    user_ms = (user_after - user) * 1000 / total
                    system_ms = (system_after - system) * 1000 / total
                    print(f"{total / elapsed:8.0f} requests/s   {user_ms + system_ms:6.3f} ms CPU "
                          f"per request (user {user_ms:.3f}, system {system_ms:.3f})   "
                          f"({total} requests, {bad} not 200)")
            finally:
                server.terminate()
                server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--lang", default="en", help="Accept-Language sent (en, es, pt-BR)")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--encoding", default="identity", choices=["identity", "gzip", "br"],
                        help="Accept-Encoding sent (the page is compressed per request)")
    args = parser.parse_args()
    measure(args.patients, args.seconds, args.connections, args.lang, args.log_level.upper(),
            args.runs, args.encoding)


if __name__ == "__main__":
    main()
