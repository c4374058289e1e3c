"""`make bench`: the real app against the Node socket.io reference, side by side, one run.

Starts, all on loopback: a FHIR stand-in answering write-backs after 50 ms, the app
(`python app.py`, one gevent process) on SQLite, the same on PostgreSQL, two app
processes sharing Redis, and the Node reference server (`../shared/bench/node-peer`).
Each gets the same load driver (`bench/node/driver.js`) at the same N, and the table
shows the app's figures with their ratio to Node's from this same run, then the targets
of issue 11 with pass/fail. The whole result is also written as JSON.

    .venv/bin/python bench/run.py                       # N=3000, every variant
    .venv/bin/python bench/run.py --pairs 1000 --variants node,sqlite
    .venv/bin/python bench/run.py --smoke               # N=50, short phases (the test suite)

Every child process has a timeout, every phase a deadline; the databases it creates
(a SQLite file, a PostgreSQL database named vv_bench_*) are removed afterwards.

The server under test gets a CPU of its own (``taskset``): a one-process server (the
app's or Node's) runs on the last CPU, the driver and the FHIR stand-in on the others,
so the load generator and the server do not take turns on one core and add each
other's stalls to the latencies (``--no-pin`` runs everything where the OS puts it).
The two-process variant is not pinned: its processes need both CPUs. PostgreSQL and
Redis, started outside the bench, run where the OS puts them.
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
NODE_DIR = BENCH / "node"
DEFAULT_NODE_PEER = ROOT.parent / "shared" / "bench" / "node-peer" / "server.js"
PYTHON = sys.executable
ALL_VARIANTS = ("node", "sqlite", "postgresql", "redis2")


@dataclass(frozen=True)
class Cpus:
    """Where the server under test runs and where the load comes from (taskset lists)."""

    server: str
    load: str

    @staticmethod
    def split() -> Cpus | None:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or not shutil.which("taskset"):
            return None
        return Cpus(str(cpus[-1]), ",".join(str(cpu) for cpu in cpus[:-1]))


def pinned(command: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *command] if cpus else command


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def raise_fd_limit() -> None:
    """Each pair costs four descriptors (two in the driver, two in the server)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def ensure_node_modules() -> None:
    if (NODE_DIR / "node_modules" / "socket.io-client").is_dir():
        return
    log("installing the driver's Node modules (npm ci)")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR,
                   check=True, timeout=300)


# --- processes --------------------------------------------------------------------------

@dataclass
class Server:
    """One or more server processes started by ``command(port)``, restartable."""

    name: str
    commands: list[list[str]]
    ports: list[int]
    env: dict[str, str]
    health: str
    logdir: Path
    cpus: str | None = None  # one CPU for a one-process server (see the module docstring)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start(self) -> None:
        self.processes = []
        for index, (command, port) in enumerate(zip(self.commands, self.ports)):
            out = open(self.logdir / f"{self.name}-{index}.log", "ab")
            self.processes.append(subprocess.Popen(pinned(command, self.cpus), cwd=ROOT,
                                                   env=self.env, stdout=out,
                                                   stderr=subprocess.STDOUT))
        for process, port in zip(self.processes, self.ports):
            wait_http(f"http://127.0.0.1:{port}{self.health}", 60, process)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def restart(self) -> dict:
        """Stop every process, start them again; the driver times the return."""
        started = time.monotonic()
        self.stop()
        stopped = time.monotonic()
        self.start()
        return {"pids": self.pids, "down_ms": round((time.monotonic() - started) * 1000),
                "stop_ms": round((stopped - started) * 1000)}

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def tail(self, lines: int = 30) -> str:
        out = []
        for path in sorted(self.logdir.glob(f"{self.name}-*.log")):
            out.append(f"--- {path.name}")
            out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)


class Control(http.server.ThreadingHTTPServer):
    """What the driver asks of this script mid-run: the write-back backlog, a restart."""

    daemon_threads = True

    def __init__(self, server: Server, backlog) -> None:
        super().__init__(("127.0.0.1", 0), _ControlHandler)
        self.app_server = server
        self.backlog = backlog
        self.max_seen = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ControlHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/backlog":
            pending, queued = self.server.backlog()
            self.server.max_seen = max(self.server.max_seen, pending)
            self._reply({"pending": pending, "queued": queued, "max_seen": self.server.max_seen})
        else:
            self._reply({"error": "unknown"}, 404)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/restart":
            self._reply(self.server.app_server.restart())
        else:
            self._reply({"error": "unknown"}, 404)

    def _reply(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args):
        pass


def run_driver(config: dict, workdir: Path, timeout: float, cpus: str | None) -> dict:
    path = workdir / f"driver-{config['label']}.json"
    config = {**config, "out": str(workdir / f"result-{config['label']}.json")}
    path.write_text(json.dumps(config))
    log(f"driver: {config['label']} ({len(config['visits'])} visits)")
    # --expose-gc: the driver collects its own heap before a timed phase (driver.js).
    completed = subprocess.run(pinned(["node", "--expose-gc", str(NODE_DIR / "driver.js"),
                                       "--config", str(path)], cpus),
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=None, timeout=timeout)
    if completed.returncode != 0:
        raise RuntimeError(f"driver {config['label']} exited with {completed.returncode}")
    return json.loads(Path(config["out"]).read_text())


# --- variants ---------------------------------------------------------------------------

@dataclass
class Plan:
    pairs: int
    probes: int
    smoke: bool
    phases: list[str]
    grace_seconds: float
    timeout: float
    profile: Path | None = None
    cpus: Cpus | None = None

    def server_cpus(self, processes: int = 1) -> str | None:
        return self.cpus.server if self.cpus and processes == 1 else None

    def load_cpus(self, processes: int = 1) -> str | None:
        """The driver's and stand-in's CPUs, when the server has one of its own."""
        return self.cpus.load if self.cpus and processes == 1 else None

    @property
    def restart_grace_seconds(self) -> float:
        """The app's default; shorter for the smoke run, but still longer than a browser's
        longest wait between reconnection attempts (5 s) plus a restart."""
        return 8.0 if self.smoke else 15.0

    def driver_config(self) -> dict:
        if self.smoke:
            return {"probe_rate": 20, "probe_hold_ms": 300, "probe_rounds": 2,
                    "churn_rate": 10, "churn_seconds": 3,
                    "join_seconds": 1, "idle_seconds": 1, "drain_timeout_seconds": 60,
                    "deadline_seconds": self.timeout - 10}
        return {"probe_rate": int(os.environ.get("VV_BENCH_PROBE_RATE", 50)),
                "probe_hold_ms": 1000, "probe_rounds": 3,
                "churn_rate": max(10, min(100, self.pairs // 20)),
                "churn_seconds": 20, "join_seconds": 5, "idle_seconds": 5,
                "drain_timeout_seconds": 180, "deadline_seconds": self.timeout - 10}


def run_node(plan: Plan, workdir: Path, node_peer: Path) -> dict:
    port = free_port()
    env = {**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")}
    server = Server("node", [["node", str(node_peer), "--port", str(port)]], [port], env,
                    "/health", workdir, plan.server_cpus())
    fake = [{"appointment_id": i, "patient_id": i} for i in range(plan.pairs + plan.probes)]
    with ExitStack() as stack:
        server.start()
        stack.callback(server.stop)
        control = Control(server, lambda: (0, 0))
        threading.Thread(target=control.serve_forever, daemon=True).start()
        stack.callback(control.shutdown)
        phases = [p for p in plan.phases if p not in ("drain", "join")]
        return run_driver({
            "label": "node", "target": "node", "url": f"http://127.0.0.1:{port}",
            "visits": fake[:plan.pairs], "probes": fake[plan.pairs:], "phases": phases,
            "server_pids": server.pids, "control_url": control.url, "grace_seconds": 0,
            **plan.driver_config()}, workdir, plan.timeout, plan.load_cpus())


@contextmanager
def fhir_standin(workdir: Path, cpus: str | None):
    port = free_port()
    out = open(workdir / "fhir-standin.log", "ab")
    process = subprocess.Popen(pinned([PYTHON, str(BENCH / "fhir_standin.py"), "--port",
                                       str(port), "--delay-ms", "50"], cpus),
                               cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/stats", 30, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def database(kind: str, workdir: Path):
    """A fresh database URL: a SQLite file, or a PostgreSQL database made for this run."""
    if kind == "sqlite":
        path = workdir / f"bench-{secrets.token_hex(4)}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for leftover in workdir.glob(path.name + "*"):
                leftover.unlink()
        return
    import sqlalchemy as sa

    base = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"vv_bench_{secrets.token_hex(4)}"
    admin_url = sa.engine.make_url(base).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def backlog_reader(database_url: str):
    import sqlalchemy as sa

    from settings import sqlalchemy_url

    engine = sa.create_engine(sqlalchemy_url(database_url))
    # Pending now, and every write-back ever queued (delivered or not).
    query = sa.text("SELECT coalesce(sum(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0),"
                    " count(*) FROM writeback_outbox")

    def pending_and_queued() -> tuple[int, int]:
        with engine.connect() as connection:
            pending, queued = connection.execute(query).one()
            return int(pending), int(queued)

    return pending_and_queued


def run_app(plan: Plan, workdir: Path, variant: str) -> dict:
    kind = "postgresql" if variant == "postgresql" else "sqlite"
    processes = 2 if variant == "redis2" else 1
    with ExitStack() as stack:
        fhir = stack.enter_context(fhir_standin(workdir, plan.load_cpus(processes)))
        url = stack.enter_context(database(kind, workdir))
        ports = [free_port() for _ in range(processes)]
        env = {**os.environ,
               "VV_DATABASE_URL": url, "VV_INSTANCE_PATH": str(workdir / "instance"),
               "VV_SECRET_KEY": "bench-secret-key-" + "x" * 32, "VV_ENV": "development",
               "VV_SANDBOX": "0", "VV_LOG_LEVEL": "WARNING", "VV_LOG_FORMAT": "text",
               "VV_PUBLIC_BASE_URL": f"http://127.0.0.1:{ports[0]}",
               # Every patient of the benchmark opens their link from 127.0.0.1.
               "VV_JOIN_LINK_RATE_LIMIT": "1000000 per minute",
               "VV_PRESENCE_GRACE_SECONDS": str(plan.grace_seconds),
               "VV_PRESENCE_RESTART_GRACE_SECONDS": str(plan.restart_grace_seconds)}
        env.pop("VV_REDIS_URL", None)
        if variant == "redis2":
            env["VV_REDIS_URL"] = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
            env["VV_REDIS_CHANNEL"] = f"vv-bench-{secrets.token_hex(4)}"
        manifest_path = workdir / f"manifest-{variant}.json"
        log(f"{variant}: seeding {plan.pairs} visits + {plan.probes} probes")
        seeded = subprocess.run(
            [PYTHON, str(BENCH / "seed.py"), "--visits", str(plan.pairs), "--probes",
             str(plan.probes), "--fhir-base", f"{fhir}/fhir", "--out", str(manifest_path)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if seeded.returncode != 0:
            raise RuntimeError(f"seeding failed:\n{seeded.stdout}\n{seeded.stderr}")
        manifest = json.loads(manifest_path.read_text())
        # Each process its own port (VV_PORT; `env` execs, so the pid is the server's).
        entry = os.environ.get("VV_BENCH_SERVER_SCRIPT", "app.py")  # for diagnosis only
        commands = [["env", f"VV_PORT={port}", PYTHON, entry] for port in ports]
        server = Server(variant, commands, ports, env, "/healthz", workdir,
                        plan.server_cpus(processes))
        server.start()
        stack.callback(server.stop)
        control = Control(server, backlog_reader(url))
        threading.Thread(target=control.serve_forever, daemon=True).start()
        stack.callback(control.shutdown)
        phases = list(plan.phases)
        if variant == "redis2":  # the cross-process hop only
            phases = [p for p in phases if p in ("probe", "idle")]
        spy = None
        if os.environ.get("VV_BENCH_STRACE"):
            spy = subprocess.Popen(["strace", "-f", "-T", "-tt", "-e",
                                    "trace=fsync,fdatasync,nanosleep,clock_nanosleep,futex",
                                    "-o", os.environ["VV_BENCH_STRACE"], "-p", str(server.pids[0])],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if plan.profile:
            # py-spy samples the server (the first process) for the whole driver run.
            spy = subprocess.Popen(
                ["py-spy", "record", "-p", str(server.pids[0]), "-r", "500", "-f", "raw",
                 "-o", str(plan.profile / f"{variant}.txt"), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            result = run_driver({
                "label": variant, "target": "app", "url": f"http://127.0.0.1:{ports[0]}",
                "provider_url": f"http://127.0.0.1:{ports[-1]}",
                "visits": manifest["visits"], "probes": manifest["probes"], "phases": phases,
                "server_pids": server.pids, "control_url": control.url,
                "fhir_stats_url": f"{fhir}/stats", "grace_seconds": plan.grace_seconds,
                "restart_grace_seconds": plan.restart_grace_seconds,
                **plan.driver_config()}, workdir, plan.timeout, plan.load_cpus(processes))
        except Exception:
            log(server.tail())
            raise
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
        with urllib.request.urlopen(f"{fhir}/stats", timeout=10) as response:
            result["fhir_standin"] = json.load(response)
        return result


# --- report -----------------------------------------------------------------------------

def get(result: dict | None, path: str):
    value = result
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


ROWS = [
    ("connect → told, paced probe p50 (ms)", "phases.probe.connect_told.p50"),
    ("connect → told, paced probe p95 (ms)", "phases.probe.connect_told.p95"),
    ("connect → told, paced probe p99 (ms)", "phases.probe.connect_told.p99"),
    ("paced probe connects timed", "phases.probe.connect_told.n"),
    ("driver's own stalls in the probe: loop lag p99 (ms)", "phases.probe.driver.loop_lag_ms.p99"),
    ("driver's own stalls in the probe: longest (ms)", "phases.probe.driver.loop_lag_ms.max"),
    ("driver's own GC in the probe: longest pause (ms)", "phases.probe.driver.gc.max_ms"),
    ("connect → told, fill at saturation p50 (ms)", "phases.fill.connect_told.p50"),
    ("connect → told, fill at saturation p99 (ms)", "phases.fill.connect_told.p99"),
    ("connect → told, during churn p99 (ms)", "phases.churn.connect_told.p99"),
    ("drop → told connection lost p50 (ms)", "phases.probe.drop_told.p50"),
    ("drop → told connection lost p99 (ms)", "phases.probe.drop_told.p99"),
    ("left, after the grace period, p99 (ms late)", "phases.probe.left_after_grace.p99"),
    ("CPU per patient connect (ms)", "phases.fill.patient_cpu_ms_per_connect"),
    ("CPU per provider connect (ms)", "phases.fill.provider_cpu_ms_per_connect"),
    ("patient connects/s at saturation", "phases.fill.patient_connects_per_s"),
    ("provider connects/s at saturation", "phases.fill.provider_connects_per_s"),
    ("KiB per socket (RSS)", "phases.idle.kib_per_socket"),
    ("idle CPU, all connected (% of a core)", "phases.idle.server_cpu_pct"),
    ("idle CPU, nobody connected (% of a core)", "phases.empty.server_cpu_pct"),
    ("restart: all sockets back (ms after return)", "phases.storm.all_back_ms"),
    ("restart: presence and lobby right (ms)", "phases.storm.views_right_ms"),
    ("restart: false disconnects sent to the EHR", "phases.storm.false_disconnects_sent"),
    ("write-backs/s (fill backlog, 50 ms EHR)", "phases.drain.writebacks_per_s"),
    ("write-back backlog, max", "phases.drain.backlog_max_seen"),
    ("write-backs/s during churn", "phases.churn.writebacks_per_s"),
    ("write-back backlog during churn, max", "phases.churn.backlog_max"),
    ("CPU per write-back (ms)", "phases.drain.server_cpu_ms_per_writeback"),
    ("longest GC pause, young generation (ms)", "gc.longest_ms.0"),
    ("longest GC pause, middle generation (ms)", "gc.longest_ms.1"),
    ("longest GC pause, full collection (ms)", "gc.longest_ms.2"),
    ("/join requests/s", "phases.join.requests_per_s"),
    ("/join CPU per request (ms)", "phases.join.server_cpu_ms_per_request"),
    ("/join p99 (ms)", "phases.join.latency.p99"),
]


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}"


def ratio(a, b) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def table(results: dict[str, dict]) -> str:
    node = results.get("node")
    sqlite = results.get("sqlite")
    cols = ["metric", "Node ref.", "app SQLite", "SQLite / Node", "app PostgreSQL",
            "PG / SQLite", "2 processes + Redis", "2 proc / 1"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for label, path in ROWS:
        n, s = get(node, path), get(sqlite, path)
        p, r = get(results.get("postgresql"), path), get(results.get("redis2"), path)
        lines.append("| " + " | ".join([label, fmt(n), fmt(s), ratio(s, n), fmt(p), ratio(p, s),
                                        fmt(r), ratio(r, s)]) + " |")
    return "\n".join(lines)


def targets(results: dict[str, dict]) -> list[tuple[str, bool | None, str]]:
    """Issue 11's targets: (what, met, the figures)."""
    node, sq = results.get("node"), results.get("sqlite")
    pg, r2 = results.get("postgresql"), results.get("redis2")
    checks: list[tuple[str, bool | None, str]] = []

    def check(what, a, op, b, note=""):
        met = None if a is None or b is None else op(a, b)
        checks.append((what, met, f"{fmt(a)} vs {fmt(b)}{note}"))

    le = lambda a, b: a <= b  # noqa: E731
    ge = lambda a, b: a >= b  # noqa: E731
    n50, n99 = get(node, "phases.probe.connect_told.p50"), get(node, "phases.probe.connect_told.p99")
    check("connect→told p50 ≤ 2× Node", get(sq, "phases.probe.connect_told.p50"), le,
          2 * n50 if n50 else None, " (2× Node)")
    check("connect→told p99 ≤ 3× Node", get(sq, "phases.probe.connect_told.p99"), le,
          3 * n99 if n99 else None, " (3× Node)")
    check("CPU ≤ 2 ms per patient connect", get(sq, "phases.fill.patient_cpu_ms_per_connect"), le, 2.0)
    check("≥ 400 patient connects/s", get(sq, "phases.fill.patient_connects_per_s"), ge, 400)
    check("restart: every socket back within 10 s", get(sq, "phases.storm.all_back_ms"), le, 10000)
    check("restart: presence and lobby places right within 10 s",
          get(sq, "phases.storm.views_right_ms"), le, 10000)
    check("restart: no false 'disconnected' to the EHR",
          get(sq, "phases.storm.false_disconnects_sent"), le, 0)
    check("≤ 40 KiB per socket", get(sq, "phases.idle.kib_per_socket"), le, 40)
    check("connection lost told within 1 s (p99)", get(sq, "phases.probe.drop_told.p99"), le, 1000)
    check("≥ 200 write-backs/s to a 50 ms EHR", get(sq, "phases.drain.writebacks_per_s"), ge, 200)
    check("idle CPU ≤ 2 % with an empty queue", get(sq, "phases.empty.server_cpu_pct"), le, 2.0)
    check("/join ≥ 1,000 requests/s", get(sq, "phases.join.requests_per_s"), ge, 1000)
    check("/join ≤ 1 ms CPU per request", get(sq, "phases.join.server_cpu_ms_per_request"), le, 1.0)
    s99 = get(sq, "phases.probe.connect_told.p99")
    check("2 processes + Redis: p99 ≤ 2× one process", get(r2, "phases.probe.connect_told.p99"),
          le, 2 * s99 if s99 else None, " (2× one process)")
    for label, path, higher_is_better in (
            ("PostgreSQL: probe p99 within 1.5× SQLite", "phases.probe.connect_told.p99", False),
            ("PostgreSQL: CPU per connect within 1.5× SQLite",
             "phases.fill.patient_cpu_ms_per_connect", False),
            ("PostgreSQL: connects/s within 1.5× SQLite", "phases.fill.patient_connects_per_s", True),
            ("PostgreSQL: write-backs/s within 1.5× SQLite", "phases.drain.writebacks_per_s", True)):
        a, b = get(pg, path), get(sq, path)
        if higher_is_better:
            check(label, a, ge, b / 1.5 if b else None, " (SQLite / 1.5)")
        else:
            check(label, a, le, 1.5 * b if b else None, " (1.5× SQLite)")
    return checks


def report(results: dict[str, dict], plan: Plan, load: dict) -> str:
    lines = [f"## Benchmark, N = {plan.pairs:,} visits (+{plan.probes} probe visits), "
             f"grace {plan.grace_seconds:g} s",
             "", f"Machine: {os.cpu_count()} cores; load average before the run "
             f"{load['before']}, after {load['after']}. "
             + (f"One-process servers on CPU {plan.cpus.server}, the driver and FHIR stand-in "
                f"on CPU {plan.cpus.load}." if plan.cpus else "No CPU pinning."),
             "", table(results), "",
             "| target | met | figures |", "|---|---|---|"]
    for what, met, figures in targets(results):
        lines.append(f"| {what} | {'–' if met is None else ('yes' if met else '**no**')} | {figures} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3000, help="visits filled (default 3000)")
    parser.add_argument("--probes", type=int, default=None, help="spare visits for the paced "
                        "probe (default N/10, at most 300)")
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS),
                        help=f"comma-separated, of {', '.join(ALL_VARIANTS)}")
    parser.add_argument("--phases", default="drain,idle,probe,churn,storm,join,empty")
    parser.add_argument("--grace", type=float, default=5.0, help="VV_PRESENCE_GRACE_SECONDS")
    parser.add_argument("--smoke", action="store_true", help="N=50 and short phases")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="let the OS place every process (default: the server under test "
                             "on a CPU of its own, the driver on the others)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (server logs, manifests) and print where")
    parser.add_argument("--profile", type=Path, default=None,
                        help="a folder: sample each app server with py-spy into <variant>.txt "
                        "(collapsed stacks; pip install py-spy)")
    parser.add_argument("--node-peer", type=Path,
                        default=Path(os.environ.get("VV_BENCH_NODE_PEER", DEFAULT_NODE_PEER)))
    args = parser.parse_args(argv)
    if args.smoke:
        args.pairs = min(args.pairs, 50)
    probes = args.probes if args.probes is not None else min(300, max(10, args.pairs // 10))
    plan = Plan(args.pairs, probes, args.smoke, args.phases.split(","), args.grace,
                timeout=300 if args.smoke else 1200, profile=args.profile,
                cpus=Cpus.split() if args.pin else None)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(ALL_VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if "node" in variants and not args.node_peer.is_file():
        parser.error(f"the Node reference server is not at {args.node_peer} (--node-peer)")
    raise_fd_limit()
    ensure_node_modules()
    load = {"before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    workdir = Path(tempfile.mkdtemp(prefix="vv-bench-"))
    results: dict[str, dict] = {}
    try:
        for variant in variants:
            if variant == "node":
                results["node"] = run_node(plan, workdir, args.node_peer)
            else:
                results[variant] = run_app(plan, workdir, variant)
    finally:
        if args.keep:
            log(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load["after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    output = {"pairs": plan.pairs, "probes": plan.probes, "grace_seconds": plan.grace_seconds,
              "load": load, "cpus": vars(plan.cpus) if plan.cpus else None, "results": results,
              "targets": [{"target": t, "met": m, "figures": f} for t, m, f in targets(results)]}
    if args.json:
        args.json.write_text(json.dumps(output, indent=1))
    print(report(results, plan, load))
    print()
    print(json.dumps(output))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
