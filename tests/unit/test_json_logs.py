"""LOG_FORMAT=json: the formatter, the ids of the greenlet's context, and the Flask request ids."""

from __future__ import annotations

import io
import json
import logging
import os

import gevent
from flask import Flask

from app.http_envelope import REQUEST_ID_HEADER, register_request_ids
from app.logs import JsonFormatter, add_log_context, gunicorn_logconfig, log_context


def formatted(logger: str, message: str, *args: object, exc_info: object = None) -> dict:
    record = logging.LogRecord(logger, logging.WARNING, __file__, 1, message, args, exc_info)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def test_a_record_is_one_json_object_with_time_level_logger_message_and_pid():
    log_context()
    entry = formatted("app.chat.relay", "kafka did not take %d events", 3)
    assert entry.keys() == {"time", "level", "logger", "message", "pid"}
    assert entry["time"].endswith("+00:00") and "T" in entry["time"]
    assert (entry["level"], entry["logger"], entry["message"]) == ("WARNING", "app.chat.relay",
                                                                  "kafka did not take 3 events")
    assert entry["pid"] == os.getpid()


def test_a_traceback_stays_on_the_one_line():
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys
        entry = formatted("x", "failed", exc_info=sys.exc_info())
    assert "ValueError: boom" in entry["exception"]


def test_the_ids_belong_to_the_greenlet_that_set_them():
    def serve(session: str) -> dict:
        log_context(request="req-1")
        add_log_context(session=session)
        gevent.sleep(0)  # the other greenlet runs meanwhile
        return formatted("app.stomp.session", "closing")

    first, second = gevent.spawn(serve, "s-1"), gevent.spawn(serve, "s-2")
    gevent.joinall([first, second])
    assert (first.value["session"], second.value["session"]) == ("s-1", "s-2")
    assert first.value["request"] == "req-1"
    log_context()
    assert "session" not in formatted("x", "outside")


def test_every_flask_request_gets_an_id_in_its_log_lines_and_its_answer():
    app = Flask("t")
    register_request_ids(app)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.request_ids")
    logger.addHandler(handler)

    @app.get("/work")
    def work() -> str:
        logger.warning("working")
        return "ok"

    try:
        client = app.test_client()
        generated = client.get("/work").headers[REQUEST_ID_HEADER]
        kept = client.get("/work", headers={REQUEST_ID_HEADER: "abc-123"}).headers[REQUEST_ID_HEADER]
        refused = client.get("/work", headers={REQUEST_ID_HEADER: "no spaces {}"}).headers[REQUEST_ID_HEADER]
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["request"] for line in lines] == [generated, "abc-123", refused]
    assert len(generated) == 16 and refused not in ("no spaces {}", generated)


def test_gunicorn_writes_its_own_lines_in_the_same_format():
    config = gunicorn_logconfig("info")
    assert config["formatters"]["generic"] == {"()": "app.logs.JsonFormatter"}
    assert config["loggers"]["gunicorn.error"]["level"] == "INFO"
    assert config["loggers"]["gunicorn.access"]["level"] == "WARNING"  # no line per SockJS poll
