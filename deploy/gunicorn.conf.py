# gunicorn -c deploy/gunicorn.conf.py 'app:create_app()'
# Several processes need VV_REDIS_URL (shared Socket.IO emits) and sticky sessions in the
# proxy in front (Socket.IO's polling transport must reach the same process).
import os

bind = os.environ.get("VV_BIND", "127.0.0.1:5000")
workers = int(os.environ.get("VV_WORKERS", "2"))
worker_class = "ops.gunicorn_worker.Worker"
# Our own access log (route patterns only); gunicorn's would print paths with join tokens.
accesslog = None
graceful_timeout = 20
