"""gunicorn settings of the chat server: ``python -m gunicorn -c gunicorn.conf.py``.

Values come from ``Settings.from_env()`` (this file and app/settings.py are the only
readers of the environment). Each worker is a gevent worker with gevent-websocket's
handler (subclassed to echo the STOMP sub-protocol); after fork it starts its own
services (the Kafka fan-out consumer and the outbox relay). On SIGTERM it stops accepting at
once, every session answers the SENDs it took and tells its client to reconnect elsewhere,
and ``worker_exit`` then stops the services (the relay publishes what it still holds) well
inside the graceful timeout.

Metrics: the workers share ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess
mode, app/metrics.py). It is exported here, before any worker imports prometheus_client,
emptied once when the master starts, and told when a worker exits.
"""

# Patch before anything imports ssl or socket: the master imports the worker class (and
# with it jwt, which imports ssl); patching only in the worker after fork is too late.
import gevent
from gevent import monkey

# gevent records each greenlet's spawning stack for debugging: ~3 KB per connection here.
gevent.config.track_greenlet_tree = False
monkey.patch_all()

import glob  # noqa: E402
import os  # noqa: E402

from app.settings import Settings, export_metrics_dir  # noqa: E402

_settings = Settings.from_env()
_metrics_dir = os.path.abspath(_settings.effective_metrics_dir)
export_metrics_dir(_metrics_dir)

wsgi_app = "app.wsgi:build()"
bind = [f"{_settings.bind_host}:{_settings.chat_http_port}"]
workers = _settings.chat_workers
worker_class = "app.stomp.ws.StompWebSocketWorker"
worker_connections = _settings.worker_connections
graceful_timeout = 10
timeout = 30
keepalive = 5
loglevel = _settings.log_level.lower()
errorlog = "-"
if _settings.log_format == "json":
    from app.logs import gunicorn_logconfig  # noqa: E402

    logconfig_dict = gunicorn_logconfig(_settings.log_level)
proc_name = "smooth-chat"


def on_starting(server):
    # Counters of an earlier run must not add up with ours. Not app.metrics: importing it
    # creates metrics, and the master must write no files of its own there.
    os.makedirs(_metrics_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(_metrics_dir, "*.db")):
        os.remove(stale)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, _metrics_dir)  # its live gauges stop counting


def _chat_server(worker):
    """The worker's ChatServer (app/wsgi.py), or None before it was loaded."""
    from app.web import ChatServer

    server = getattr(worker, "wsgi", None)  # gunicorn's attribute, set once the app is loaded
    return server if isinstance(server, ChatServer) else None


def post_worker_init(worker):
    from workers.lifecycle import tune_gc

    server = _chat_server(worker)
    tune_gc(_settings.gc_gen0_threshold)
    server.start()
    # SIGTERM: the worker closes its listeners at once, then this drains the sessions
    # (app/stomp/ws.py StompWebSocketWorker).
    worker.on_stop = server.drain


def worker_exit(arbiter, worker):
    server = _chat_server(worker)
    if server is not None and worker.pid == os.getpid():  # the arbiter may call this too
        server.stop()
