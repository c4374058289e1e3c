"""The production-shaped stack on loopback, once per test session (`make stack-test`).

- nginx from deploy/nginx/ (rendered with loopback ports) with TLS from a CA made here,
  serving the static export and an EHR page of another site (https://ehr.test);
- gunicorn with deploy/gunicorn.conf.py: 2 gevent workers;
- a PostgreSQL database created here in the 127.0.0.1:5432 server and dropped after
  (never the database the other tests use); a private redis-server; coturn;
- migrations, the sandbox EHR and the static export through the same `flask` commands an
  operator runs.

The app's public URL is https://vv.test:<port>. Chromium resolves vv.test and ehr.test
with ``--host-resolver-rules``; the app's own requests to its public URL go through a
CONNECT proxy (connect_proxy.py) that stands in for DNS.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from settings import sqlalchemy_url
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, OUTPUT, SERVER_START_SECONDS, free_port
from tests.redis_server import PrivateRedis, wait_until
from tests.stack.connect_proxy import ConnectProxy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TURNSERVER = "/usr/bin/turnserver"
APP_HOST, EHR_HOST = "vv.test", "ehr.test"
TURN_SECRET = "stack-test-turn-secret"
# The server the other tests use; the stack makes a database of its own in it.
POSTGRES = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
COMMAND_TIMEOUT = 90


@dataclass
class Stack:
    workdir: Path
    port: int
    env: dict
    database_url: str
    gunicorn: subprocess.Popen
    proxy_url: str
    ca_path: Path
    spki_hash: str
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://{APP_HOST}:{self.port}"

    @property
    def ehr_url(self) -> str:
        return f"https://{EHR_HOST}:{self.port}"

    def http(self) -> requests.Session:
        """A client that reaches vv.test through the proxy and trusts the test CA."""
        session = requests.Session()
        session.trust_env = False
        session.proxies = {"https": self.proxy_url}
        session.verify = str(self.ca_path)
        return session

    def flask(self, *args: str) -> str:
        return run_flask(self.env, *args)

    def sql(self, statement: str, **params) -> list:
        engine = create_engine(sqlalchemy_url(self.database_url))
        try:
            with engine.begin() as connection:
                result = connection.execute(text(statement), params)
                return result.fetchall() if result.returns_rows else []
        finally:
            engine.dispose()

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.gunicorn.pid}/task/{self.gunicorn.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def diagnostics(self) -> str:
        """The tail of every log, for a failure message; the whole logs are copied to
        test-output/stack/ (pytest's temporary folders do not outlive a few runs)."""
        kept = OUTPUT / "stack"
        kept.mkdir(parents=True, exist_ok=True)
        for path in [*self.logs.values(), self.workdir / "nginx-access.log"]:
            if path.exists():
                shutil.copy(path, kept / path.name)
        parts = [f"logs copied to {kept}"]
        for name, path in self.logs.items():
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-40:]
                parts.append(f"--- {name} ({path})\n" + "\n".join(lines))
        return "\n".join(parts)


def run_flask(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def flask_process(env: dict, workdir: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """A `flask` command started in the background; ``finish()`` waits for it."""
    log_path = workdir / f"flask-{args[0]}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", *args],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, log_path


def finish(started: tuple[subprocess.Popen, Path]) -> None:
    process, log_path = started
    try:
        process.wait(timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, process.args[3:]))} failed "
                           f"({process.returncode}):\n{log_path.read_text(errors='replace')}")


# --- TLS: a CA of our own and a certificate for both test sites --------------------------

def make_certificates(folder: Path) -> tuple[Path, Path, Path, str]:
    """CA, server certificate (vv.test, ehr.test, 127.0.0.1) and key; and the server
    key's SPKI hash, which Chromium is told to trust."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Virtual Visits stack test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, APP_HOST)]))
              .issuer_name(ca_name).public_key(key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(hours=1))
              .not_valid_after(now + dt.timedelta(days=2))
              .add_extension(x509.SubjectAlternativeName([
                  x509.DNSName(APP_HOST), x509.DNSName(EHR_HOST),
                  x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                             critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                  ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server.public_bytes(serialization.Encoding.PEM)
                          + ca.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return ca_path, cert_path, key_path, base64.b64encode(hashlib.sha256(spki).digest()).decode()


# --- services ---------------------------------------------------------------------------

def create_database() -> tuple[str, callable]:
    """A fresh database in the PostgreSQL server, and a function that drops it."""
    name = f"vv_stack_{uuid.uuid4().hex[:10]}"
    server = make_url(POSTGRES)
    admin = create_engine(sqlalchemy_url(POSTGRES), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def start_coturn(workdir: Path) -> tuple[subprocess.Popen, int, Path]:
    """coturn with deploy/coturn/turnserver.conf, loopback ports and the test's secret on
    the command line (which overrides the file)."""
    if not Path(TURNSERVER).exists():
        pytest.fail(f"{TURNSERVER} is missing: `make install-test` installs Debian coturn")
    port = free_port()
    relay_low = random.randrange(40000, 60000, 100)
    pidfile = workdir / "turnserver.pid"
    log_path = workdir / "turnserver.log"
    log = open(log_path, "wb")  # noqa: SIM115  (the server's own)
    process = subprocess.Popen([
        TURNSERVER, "-c", str(DEPLOY / "coturn" / "turnserver.conf"),
        "--log-file=stdout",
        "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
        f"--min-port={relay_low}", f"--max-port={relay_low + 60}",
        f"--static-auth-secret={TURN_SECRET}", "--realm=stack.test",
        "--allow-loopback-peers", "--no-tls", "--no-dtls", f"--pidfile={pidfile}",
        "--simple-log"], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    wait_until(lambda: process.poll() is not None or (pidfile.exists()
                                                      and pidfile.read_text().strip()),
               15, "turnserver to write its pidfile")
    if process.poll() is not None:
        pytest.fail(f"turnserver exited:\n{log_path.read_text(errors='replace')}")
    return process, port, log_path


NGINX_MAIN = """\
{user}worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log info;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    access_log {work}/nginx-access.log;
    client_body_temp_path {work}/nginx-tmp/body;
    proxy_temp_path {work}/nginx-tmp/proxy;
    fastcgi_temp_path {work}/nginx-tmp/fastcgi;
    uwsgi_temp_path {work}/nginx-tmp/uwsgi;
    scgi_temp_path {work}/nginx-tmp/scgi;
    include {work}/virtual-visits.conf;

    # The EHR of another site, for the embedded launch (not part of deploy/).
    server {{
        listen 127.0.0.1:{port} ssl http2;
        server_name {ehr_host};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {work}/ehr;
        location / {{ try_files $uri =404; }}
    }}
}}
"""


def start_nginx(workdir: Path, port: int, upstream: str, cert: Path, key: Path,
                static_export: Path) -> subprocess.Popen:
    if not Path(NGINX).exists():
        pytest.fail(f"{NGINX} is missing: `make install-test` installs Debian nginx")
    sys.path.insert(0, str(DEPLOY / "nginx"))
    try:
        import render
    finally:
        sys.path.remove(str(DEPLOY / "nginx"))
    (workdir / "virtual-visits.conf").write_text(render.render({
        "VV_SERVER_NAME": APP_HOST, "VV_HTTPS_LISTEN": f"127.0.0.1:{port}",
        "VV_HTTP_LISTEN": f"127.0.0.1:{free_port()}", "VV_TLS_CERTIFICATE": str(cert),
        "VV_TLS_CERTIFICATE_KEY": str(key), "VV_UPSTREAM": upstream,
        "VV_STATIC_EXPORT": str(static_export)}))
    (workdir / "nginx-tmp").mkdir()
    (workdir / "ehr").mkdir()
    # Running as root, nginx's workers would drop to "nobody", who cannot read pytest's
    # temporary folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    (workdir / "nginx.conf").write_text(NGINX_MAIN.format(
        user=user, work=workdir, port=port, ehr_host=EHR_HOST, cert=cert, key=key))
    command = [NGINX, "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
               "-e", str(workdir / "nginx-error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    if checked.returncode != 0:
        pytest.fail(f"nginx -t refused the rendered config:\n{checked.stderr}")
    log = open(workdir / "nginx.out", "wb")  # noqa: SIM115
    process = subprocess.Popen([*command, "-g", "daemon off;"], stdout=log,
                               stderr=subprocess.STDOUT)
    log.close()
    return process


def stop(process: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _interrupt_on_sigterm(_signum, _frame):
    raise KeyboardInterrupt("SIGTERM")


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    started = time.monotonic()
    # A run stopped with SIGTERM (a CI timeout) still stops nginx, gunicorn, coturn and
    # Redis and drops the database: pytest tears fixtures down after an interrupt, but
    # Python's default SIGTERM ends the process at once.
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    workdir = tmp_path_factory.mktemp("stack")
    ca_path, cert_path, key_path, spki_hash = make_certificates(workdir)
    database_url, drop_database = create_database()
    redis_server = PrivateRedis(workdir)
    processes: list[subprocess.Popen] = []
    proxy = ConnectProxy().__enter__()
    try:
        redis_server.start()
        turn, turn_port, turn_log = start_coturn(workdir)
        processes.append(turn)
        port, app_port = free_port(), free_port()
        public = f"https://{APP_HOST}:{port}"
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("VV_", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                                      "https_proxy", "NO_PROXY", "no_proxy"))}
        env.update({
            "VV_INSTANCE_PATH": str(workdir / "instance"),
            "VV_DATABASE_URL": database_url,
            # The sandbox EHR keeps its FHIR resources in the same PostgreSQL database.
            "VV_SANDBOX_DATABASE_URL": database_url,
            "VV_REDIS_URL": redis_server.url,
            "VV_REDIS_CHANNEL": f"vv-stack-{uuid.uuid4().hex[:8]}",
            "VV_SANDBOX": "1",
            "VV_SANDBOX_FIRST_VISIT": "now",
            "VV_PUBLIC_BASE_URL": public,
            "VV_PROXY_COUNT": "1",
            "VV_SECRET_KEY": "stack-test-secret-key-0123456789abcdef0123",
            "VV_TURN_URLS": f"turn:127.0.0.1:{turn_port}?transport=udp,"
                            f"turn:127.0.0.1:{turn_port}?transport=tcp",
            "VV_TURN_SECRET": TURN_SECRET,
            "VV_PROCESS_TIMEOUT_SECONDS": "8",
            "VV_PRESENCE_SWEEP_SECONDS": "0.5",
            "VV_PRESENCE_RESTART_GRACE_SECONDS": "2",
            "VV_LOG_FORMAT": "json",
            "VV_BIND": f"127.0.0.1:{app_port}",
            "VV_WORKERS": "2",
            # The app's requests to https://vv.test: through the proxy, trusting our CA.
            "HTTPS_PROXY": proxy.url,
            "REQUESTS_CA_BUNDLE": str(ca_path),
        })
        static_export = workdir / "static-export"
        # As an operator deploys: migrate first; then, side by side, seed the sandbox
        # (`flask demo`: the sandbox EHR registered and approved, its HL7 certificate),
        # export the static files and start gunicorn.
        step = time.monotonic()
        run_flask(env, "db", "upgrade")
        print(f"flask db upgrade: {time.monotonic() - step:.1f} s")
        # The EHR of another site may frame the launch: the endpoint's frame origin (a
        # change that withdraws approval, so it is approved again).
        configured: list[str] = []

        def configure_endpoint() -> None:
            try:
                for command in (["demo"], ["endpoints", "update", "sandbox", "--frame-ancestor",
                                           f"https://{EHR_HOST}:{port}"],
                                ["endpoints", "approve", "sandbox", "--by", "stack-test"]):
                    run_flask(env, *command)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:  # reported below
                configured.append(str(exc))
            else:
                configured.append("ok")

        configure = threading.Thread(target=configure_endpoint, daemon=True)
        configure.start()
        side_by_side = [flask_process(env, workdir, "static", "export", str(static_export))]
        gunicorn_log = workdir / "gunicorn.log"
        log = open(gunicorn_log, "wb")  # noqa: SIM115
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(DEPLOY / "gunicorn.conf.py"),
             "app:create_app()"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        processes.append(gunicorn)
        for command in side_by_side:
            finish(command)
        configure.join(COMMAND_TIMEOUT * 3)
        if configured != ["ok"]:
            pytest.fail(f"flask demo, endpoints update, approve: {configured or 'no answer'}")
        print(f"flask demo, endpoints, static export: {time.monotonic() - step:.1f} s")
        nginx = start_nginx(workdir, port, f"127.0.0.1:{app_port}", cert_path, key_path,
                            static_export)
        processes.append(nginx)
        built = Stack(workdir=workdir, port=port, env=env, database_url=database_url,
                      gunicorn=gunicorn, proxy_url=proxy.url, ca_path=ca_path,
                      spki_hash=spki_hash, logs={
                          "gunicorn": gunicorn_log, "nginx": workdir / "nginx-error.log",
                          "coturn": turn_log})

        def ready() -> bool:
            for process in (gunicorn, nginx, turn):
                if process.poll() is not None:
                    pytest.fail(f"{process.args[0]} exited with {process.returncode}:\n"
                                f"{built.diagnostics()}")
            if len(built.worker_pids()) < 2:
                return False
            try:
                with built.http() as http:
                    return http.get(f"{built.url}/readyz", timeout=2).json()["status"] == "ok"
            except (requests.RequestException, ValueError):
                return False

        wait_until(ready, SERVER_START_SECONDS,
                   "nginx and 2 gunicorn workers answering /readyz over https")
        print(f"stack up in {time.monotonic() - started:.1f} s at {built.url}")
        yield built
    finally:
        for process in reversed(processes):
            step = time.monotonic()
            # gunicorn's quick shutdown (SIGINT): nothing it would finish is kept anyway.
            stop(process, signal.SIGINT if "gunicorn" in process.args else signal.SIGTERM)
            print(f"stopped {process.args[0]}: {time.monotonic() - step:.1f} s")
        pidfile = workdir / "turnserver.pid"
        if pidfile.exists() and pidfile.read_text().strip():
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            except ProcessLookupError:
                pass
        step = time.monotonic()
        if redis_server.process is not None:
            redis_server.process.kill()  # it keeps nothing; SIGTERM's shutdown takes seconds
        redis_server.stop()
        proxy.__exit__(None, None, None)
        drop_database()
        print(f"stopped redis, dropped the database: {time.monotonic() - step:.1f} s")
        if previous is signal.SIG_DFL and signal.getsignal(signal.SIGTERM) is _interrupt_on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def stack_browser(stack, playwright_driver):
    """Chromium with its default cookie settings, resolving the two test sites to
    loopback and trusting the stack's server key."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian chromium")
    launched = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=[
        *CHROMIUM_ARGS,
        f"--host-resolver-rules=MAP {APP_HOST} 127.0.0.1, MAP {EHR_HOST} 127.0.0.1",
        f"--ignore-certificate-errors-spki-list={stack.spki_hash}"])
    yield launched
    launched.close()
