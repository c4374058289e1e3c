# gunicorn -c deploy/gunicorn.conf.py 'app:create_app()'
#
# Several gevent workers (ops/gunicorn_worker.py: real WebSockets, Nagle off), one
# listening socket. Several processes need VV_REDIS_URL (shared Socket.IO emits, presence
# and rate limits) and a shared VV_DATABASE_URL (PostgreSQL). No sticky sessions are
# needed in the proxy: the pages use Socket.IO's WebSocket transport only
# (static/js/socket.js), and a WebSocket stays on the worker that accepted it.
# `make stack-test` runs this file with 2 workers behind deploy/nginx/ (tests/stack/).
# gevent patches first, at the entry of the process: the master imports the worker class,
# and with it the app's modules (requests, urllib3, redis), before it forks. Patched only
# in the worker, as gunicorn's gevent worker does, ssl is patched after urllib3 took its
# own reference to ssl.SSLContext, and every outgoing https request of a worker (SMART
# discovery, FHIR, Twilio) then dies in a RecursionError (gevent issue 1016). Found by
# `make stack-test`, whose sandbox EHR is reached over https.
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402  (after the patch, on purpose)

bind = os.environ.get("VV_BIND", "127.0.0.1:5000")
# Sizing (docs/operations.md): one worker per core; each holds thousands of sockets.
workers = int(os.environ.get("VV_WORKERS", "2"))
worker_class = "ops.gunicorn_worker.Worker"
# Our own access log (route patterns only); gunicorn's would print paths with join tokens.
accesslog = None
# A worker that stops answering its heartbeat for this long is killed and replaced; the
# others clear the presence of its sockets (VV_PROCESS_TIMEOUT_SECONDS).
timeout = 30
graceful_timeout = 20
