"""History scenario: seeding N stored messages, then timing history pages and message-count.

Owns: ``seed`` (insert_many batches of ``to_document`` documents straight into the embedded
MongoDB-wire server under ``<data_dir>/mongo``, timed, remembered in ``seed.json`` so later
runs reuse the data) and ``run`` (Smooth on that data: GET a page of 50 of a community
channel, POST message-count for 100 DM rooms, each repeated and timed over keep-alive HTTP).

Half of the messages go to 100 community channels, half to 100 DM rooms (users 5 and 6).
"""

from __future__ import annotations

import http.client
import json
import random
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from app.auth import mint_token
from bench.report import percentiles, table, verdict

__all__ = ["seed", "run", "CHANNELS", "ROOMS"]

COMMUNITY = 1
CHANNELS = list(range(10, 110))
ROOMS = list(range(1000, 1100))
USER, PEER = 5, 6
EPOCH = datetime(2024, 1, 1)
SERIES_BUDGET_S = 90.0
COLUMNS = ["query", "stored_messages", "requests", "p50_ms", "p99_ms", "max_ms", "status"]


def _docs(start: int, count: int) -> list[dict[str, Any]]:
    from app.backends.base import ChatMessage
    from app.backends.mongo_schema import to_document

    docs = []
    for i in range(start, start + count):
        when = EPOCH + timedelta(milliseconds=10 * i)
        if i % 2 == 0:
            msg = ChatMessage(kind="channel", channel_id=CHANNELS[(i // 2) % 100], user_id=USER if i % 4 else PEER,
                              content=f"seeded message {i}", created_at=when, community_id=COMMUNITY, name="bench")
        else:
            msg = ChatMessage(kind="direct", channel_id=ROOMS[(i // 2) % 100], user_id=PEER if i % 3 else USER,
                              content=f"seeded direct {i}", created_at=when, name="bench")
        docs.append(to_document(msg))
    return docs


def seeded(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "seed.json"
    return json.loads(path.read_text()) if path.exists() else {"messages": 0, "seconds": 0.0}


def seed(data_dir: Path, messages: int, batch: int = 5000, time_budget_s: float = 1800.0) -> dict[str, Any]:
    """Top the store up to ``messages`` documents; stops early at ``time_budget_s`` and says so."""
    import pymongo

    from app.backends.mongo_schema import COLLECTIONS, ensure_indexes
    from app.embedded import start_mongo

    state = seeded(data_dir)
    server = start_mongo(data_dir)
    try:
        db = pymongo.MongoClient(server.url)["smooth"]
        ensure_indexes(db)
        have = sum(db[c].estimated_document_count() for c in COLLECTIONS.values())
        t0, done = time.monotonic(), have
        while done < messages and time.monotonic() - t0 < time_budget_s:
            docs = _docs(done, min(batch, messages - done))
            for kind in ("channelMessage", "directMessage"):
                part = [d for d in docs if ("communityId" in d) == (kind == "channelMessage")]
                if part:
                    db[kind].insert_many(part, ordered=False)
            done += len(docs)
            if done // 50_000 != (done - len(docs)) // 50_000:
                print(f"seeded {done:,} ({(done - have) / (time.monotonic() - t0):,.0f} docs/s)", flush=True)
        elapsed = time.monotonic() - t0
    finally:
        server.stop()
    state = {"messages": done, "seconds": round(state["seconds"] + elapsed, 1), "batch": batch,
             "docs_per_s_last_run": round((done - have) / elapsed, 1) if elapsed else None,
             "complete": done >= messages}
    (data_dir / "seed.json").write_text(json.dumps(state))
    print(table("seed", [state], ["messages", "seconds", "batch", "docs_per_s_last_run", "complete"]), flush=True)
    return state


def _timed(conn: http.client.HTTPConnection, method: str, path: str, body: Any, token: str) -> tuple[float, int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    payload = json.dumps(body).encode() if body is not None else None
    t0 = time.monotonic_ns()
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    data = response.read()
    elapsed = time.monotonic_ns() - t0
    return elapsed, response.status, data


def _series(port: int, token: str, requests: int, make: Any,
            budget_s: float = SERIES_BUDGET_S) -> tuple[dict[str, Any], dict[int, int], Any]:
    """``requests`` sequential requests, or fewer when ``budget_s`` runs out (slow answers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat, statuses, sample = [], {}, None
    deadline = time.monotonic() + budget_s
    for n in range(requests):
        if time.monotonic() > deadline:
            statuses["stopped_by_budget"] = requests - n
            break
        method, path, body = make(n)
        try:
            elapsed, status, data = _timed(conn, method, path, body, token)
        except OSError as exc:  # a timeout: count it, reconnect
            elapsed, status, data = 30 * 10**9, f"timeout ({type(exc).__name__})", b""
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        lat.append(elapsed)
        statuses[status] = statuses.get(status, 0) + 1
        sample = sample or data[:300]
    conn.close()
    return percentiles(lat), statuses, sample


def seed_running(mongo_url: str, messages: int) -> int:
    """Top a running (in-memory) MongoDB-wire server up to ``messages``; returns how many it holds."""
    import pymongo

    from app.backends.mongo_schema import COLLECTIONS

    client = pymongo.MongoClient(mongo_url)
    try:
        db = client["smooth"]
        have = sum(db[c].estimated_document_count() for c in COLLECTIONS.values())
        if have < messages:
            docs = _docs(have, messages - have)
            for kind in ("channelMessage", "directMessage"):
                part = [d for d in docs if ("communityId" in d) == (kind == "channelMessage")]
                if part:
                    db[kind].insert_many(part, ordered=False)
        return max(have, messages)
    finally:
        client.close()


def run(data_dir: Path, requests: int = 200, in_memory: int = 0) -> dict[str, Any]:
    """Time the queries on the data seeded under ``data_dir``; with ``in_memory`` (``--quick``),
    on an in-memory store that this many messages are inserted into first instead."""
    from bench.servers import SmoothStack
    from tests.support.rooms import set_community, set_room_members

    stored = seeded(data_dir)["messages"]
    with SmoothStack(data_dir, mongo_in_memory=bool(in_memory)).running() as stack:
        settings = stack.settings
        assert settings is not None
        if in_memory:
            stored = seed_running(settings.mongo_url, in_memory)
        set_community(settings.redis_url, COMMUNITY, [USER, PEER], CHANNELS)
        for room in ROOMS:
            set_room_members(settings.redis_url, room, [USER, PEER])
        token = mint_token(settings.jwt_secret, USER)
        port = settings.chat_http_port
        page = _series(port, token, requests, lambda n: (
            "GET", f"/chat-server/community?ch_id={random.choice(CHANNELS)}&page=0&size=50", None))
        deep = _series(port, token, requests // 4, lambda n: (
            "GET", f"/chat-server/community?ch_id={random.choice(CHANNELS)}&page=40&size=50", None))
        count = _series(port, token, requests, lambda n: (
            "POST", "/chat-server/message-count", {"userId": USER, "roomIds": ROOMS}))
    result = {"stored_messages": stored, "page0": page[0], "page0_status": page[1], "page0_sample": str(page[2]),
              "page40": deep[0], "page40_status": deep[1], "count100": count[0], "count100_status": count[1],
              "count_sample": str(count[2])}
    rows = [{"query": q, "stored_messages": stored, "requests": r[0]["count"], "p50_ms": r[0]["p50"],
             "p99_ms": r[0]["p99"], "max_ms": r[0]["max"], "status": r[1]}
            for q, r in (("page of 50 (page 0)", page), ("page of 50 (page 40)", deep),
                         ("message-count, 100 rooms", count))]
    print(table("history", rows, COLUMNS), flush=True)
    return result


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    note = f"{result['stored_messages']:,} stored messages"
    ok_page = result["page0_status"].get(200) == result["page0"]["count"]
    ok_count = result["count100_status"].get(200) == result["count100"]["count"]
    page = verdict("history_p99", result["page0"]["p99"], note if ok_page else f"{note}; answers {result['page0_status']}")
    count = verdict("count_100", result["count100"]["p99"], note if ok_count else f"{note}; answers {result['count100_status']}")
    for item, ok in ((page, ok_page), (count, ok_count)):
        if not ok:
            item["verdict"] = "MISS"  # a fast error is not a pass
    return [page, count]
