"""History scenario: seeding N stored messages, then timing history pages and message-count.

Owns: ``seed`` (insert_many batches of ``to_document`` documents straight into the embedded
MongoDB-wire server under ``<data_dir>/mongo``, timed, remembered in ``seed.json`` so later
runs reuse the data; then the room summaries rebuilt from them, timed on their own) and
``run`` (Smooth on that data: GET a page of 50 of a community channel, page 0 and page 40,
and POST message-count for 100 DM rooms three times: user 5 never read any room (the summary
answers alone); with a read mark set in the past in each room leaving ``UNREAD_AFTER_MARK``
unread (as an older writer leaves marks: each room counts its messages after the mark); and
the common case, each room read now (the mark records the room's read position) and then
``UNREAD_AFTER_MARK`` new messages from the peer (a subtraction per room); every request timed over keep-alive HTTP,
every answer checked against what the seed formula gives). During the message-count series
user 6 has a read mark in every room (each room has its ``messageTime`` document, as in use).

Before the series, what a server that has been running would have warm is warmed, and
nothing else:

- the database's cache: each channel's summary and newest page are read once straight
  through pymongo (``_warm_database``), as a running MongoDB has its working set in memory
  (SecantusDB has just been started, and its first read of a page from disk cost ~1 ms more);
- the chat worker process: ``WARMUP_REQUESTS`` pages of the DM rooms (``_warm_worker``; a
  fresh process's first few hundred requests were ~2 ms slower, its heap and code paths new).

Smooth's caches of the channels measured stay cold: the first page of each channel is
still Smooth's first read of that room (its density and its community are looked up).
bench/FINDINGS.md has the figures with and without the warm-up.

Data seeded before room summaries existed has none: ``run`` rebuilds them first, timed and
reported apart from the series (``summary_rebuild``). The read marks are removed again
afterwards, so the messages and marks stay as seeded.

Half of the messages go to 100 community channels, half to 100 DM rooms (users 5 and 6).
"""

from __future__ import annotations

import http.client
import json
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
UNREAD_AFTER_MARK = 20
WARMUP_REQUESTS = 300
COLUMNS = ["query", "stored_messages", "requests", "p50_ms", "p99_ms", "max_ms", "status"]


def _docs(start: int, count: int) -> list[dict[str, Any]]:
    from app.chat.model import ChatMessage
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
        summaries = ensure_summaries(db, rebuild_anyway=done > have)
    finally:
        server.stop()
    state = {"messages": done, "seconds": round(state["seconds"] + elapsed, 1), "batch": batch,
             "docs_per_s_last_run": round((done - have) / elapsed, 1) if elapsed else None,
             "complete": done >= messages, "summary_rebuild_s": summaries["seconds"] if summaries else None}
    (data_dir / "seed.json").write_text(json.dumps(state))
    print(table("seed", [state], ["messages", "seconds", "batch", "docs_per_s_last_run", "complete",
                                  "summary_rebuild_s"]), flush=True)
    return state


def ensure_summaries(db: Any, *, rebuild_anyway: bool = False) -> dict[str, Any] | None:
    """Rebuild the room summaries (timed) when they are not believed yet, as for data seeded
    before they existed, or when ``rebuild_anyway`` (the seed just wrote around the writer)."""
    from app.backends.mongo_schema import SUMMARIES, SUMMARY_MARKER_ID
    from app.backends.mongo_summaries import rebuild

    if not rebuild_anyway and db[SUMMARIES].find_one({"_id": SUMMARY_MARKER_ID}) is not None:
        return None
    t0 = time.monotonic()
    report = rebuild(db)
    result = {"seconds": round(time.monotonic() - t0, 1), "direct": report["direct"], "channel": report["channel"]}
    print(f"room summaries rebuilt in {result['seconds']} s: {report['direct']['rooms']} DM rooms, "
          f"{report['channel']['rooms']} channels", flush=True)
    return result


def _timed(conn: http.client.HTTPConnection, method: str, path: str, body: Any, token: str) -> tuple[float, int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    payload = json.dumps(body).encode() if body is not None else None
    t0 = time.monotonic_ns()
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    data = response.read()
    elapsed = time.monotonic_ns() - t0
    return elapsed, response.status, data


def _series(port: int, token: str, requests: int, make: Any, budget_s: float = SERIES_BUDGET_S,
            check: Any = None) -> tuple[dict[str, Any], dict[Any, int], Any]:
    """``requests`` sequential requests, or fewer when ``budget_s`` runs out (slow answers).

    ``check(n, body) -> bool`` judges the n-th answer (a 200) after its time is taken; the
    failures are counted under ``wrong_answer`` in the statuses."""
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
        if status == 200 and check is not None and not check(n, data):
            statuses["wrong_answer"] = statuses.get("wrong_answer", 0) + 1
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
            ensure_summaries(db, rebuild_anyway=True)
        return max(have, messages)
    finally:
        client.close()


def _unread_never_read(stored: int) -> dict[int, int]:
    """Per DM room, the messages of PEER among the first ``stored`` of ``_docs``: what
    message-count must say for USER with no read mark."""
    unread = dict.fromkeys(ROOMS, 0)
    for i in range(1, stored, 2):  # odd indexes are DM messages
        if i % 3:
            unread[ROOMS[(i // 2) % 100]] += 1
    return unread


def _marks_leaving_unread(db: Any, unread: int) -> dict[int, tuple[datetime, int]]:
    """Per DM room, a mark for USER with ``unread`` of PEER's messages strictly after it (fewer
    in a room that holds fewer), and that exact count, read from the room's newest messages."""
    from app.backends.mongo_recent import newest_documents
    from app.backends.mongo_summaries import RoomSummaries

    marks = {}
    for room in ROOMS:
        density = RoomSummaries(db).density("direct", room)
        want = 3 * unread
        while True:
            docs = newest_documents(db.directMessage, room, want, density=density,
                                    projection={"userId": 1, "localDateTime": 1})
            others = [d["localDateTime"] for d in docs if d["userId"] != USER]
            if len(others) > unread or len(docs) < want:
                break
            want *= 2
        if others:
            mark = others[min(unread, len(others) - 1)]
            marks[room] = (mark, sum(1 for when in others if when > mark))
    return marks


def _set_marks(db: Any, marks: dict[int, tuple[datetime, int]]) -> None:
    from app.backends.mongo_history import MongoReadSide

    for room, (mark, _) in marks.items():
        MongoReadSide(db).mark_read(f"r-{room}", USER, mark)


def _peer_has_read_everything(db: Any) -> None:
    """PEER's mark at each room's end: every room has its ``messageTime`` document, as in use
    (the marks query then costs what it costs with marks), and USER still has none."""
    from app.backends.mongo_history import MongoReadSide

    for room in ROOMS:
        MongoReadSide(db).mark_read(f"r-{room}", PEER, datetime(2100, 1, 1))


def _clear_marks(db: Any, *, user: int | None = USER) -> None:
    """Remove USER's marks (``user=None``: the rooms' read-mark documents, as seeded)."""
    rooms = {"channelId": {"$in": [f"r-{room}" for room in ROOMS]}}
    if user is None:
        db.messageTime.delete_many(rooms)
    else:
        db.messageTime.update_many(rooms, {"$unset": {f"read.{user}": ""}})


def _read_now_then_new_messages(db: Any, settings: Any, unread: int, stored: list[Any]) -> None:
    """USER reads every room now (marks with read positions), then PEER writes ``unread`` new
    messages to each, through the writer (so the summaries count them), each appended to
    ``stored`` as it is stored (so a failure midway still leaves them to clean up)."""
    from app.backends.mongo_history import MongoReadSide
    from app.backends.mongo_messages import MongoConnection, MongoMessageWriter
    from app.chat.model import ChatMessage

    now = datetime.utcnow()
    read_side = MongoReadSide(db)
    for room in ROOMS:
        read_side.mark_read(f"r-{room}", USER, now)
    connection = MongoConnection(settings)
    try:
        writer = MongoMessageWriter(connection)
        for room in ROOMS:
            for i in range(unread):
                stored.append(writer.insert(ChatMessage(kind="direct", channel_id=room, user_id=PEER,
                                                        content=f"new {i}", name="bench",
                                                        created_at=now + timedelta(milliseconds=i + 1))))
    finally:
        connection.close()


def _delete_new_messages(settings: Any, messages: list[Any]) -> None:
    """Take the new messages away again through the writer (the summaries follow)."""
    from app.backends.mongo_messages import MongoConnection, MongoMessageWriter

    connection = MongoConnection(settings)
    try:
        writer = MongoMessageWriter(connection)
        for message in messages:
            writer.delete("direct", message.id, message.user_id)
    finally:
        connection.close()


def _counts_are(expected: dict[int, int]) -> Any:
    def check(n: int, body: bytes) -> bool:
        return {entry["roomId"]: entry["count"] for entry in json.loads(body)} == expected
    return check


def _warm_database(db: Any) -> None:
    """Read what the page series reads, around Smooth: the server's cache, not Smooth's."""
    from app.backends.mongo_recent import newest_documents
    from app.backends.mongo_summaries import RoomSummaries

    summaries = RoomSummaries(db)
    for channel in CHANNELS:
        newest_documents(db.channelMessage, channel, 50, density=summaries.density("channel", channel))


def _warm_worker(port: int, token: str) -> None:
    """``WARMUP_REQUESTS`` DM-room pages, untimed: the same code, none of the channels timed."""
    _, statuses, _ = _series(port, token, WARMUP_REQUESTS, lambda n: (
        "GET", f"/chat-server/direct?ch_id={ROOMS[n % len(ROOMS)]}&page=0&size=50", None))
    if set(statuses) != {200}:
        raise RuntimeError(f"warm-up requests failed: {statuses}")


def _channel_of(n: int) -> int:
    """The channel the n-th page request reads (a stride through all of them)."""
    return CHANNELS[(n * 37) % len(CHANNELS)]


def _pages_are(stored: int, page: int, size: int = 50) -> Any:
    """The n-th answer must be page ``page`` of ``_channel_of(n)`` as the seed formula has it:
    the right messages, oldest first."""
    indexes: dict[int, list[int]] = {channel: [] for channel in CHANNELS}
    for i in range(0, stored, 2):  # even indexes are channel messages, in time order
        indexes[CHANNELS[(i // 2) % 100]].append(i)

    def check(n: int, body: bytes) -> bool:
        mine = indexes[_channel_of(n)]
        end = max(0, len(mine) - page * size)
        expected = [f"seeded message {i}" for i in mine[max(0, end - size):end]]
        return [item["message"] for item in json.loads(body)["result"]] == expected
    return check


def run(data_dir: Path, requests: int = 200, in_memory: int = 0) -> dict[str, Any]:
    """Time the queries on the data seeded under ``data_dir``; with ``in_memory`` (``--quick``),
    on an in-memory store that this many messages are inserted into first instead."""
    import pymongo

    from bench.servers import SmoothStack
    from tests.support.rooms import set_community, set_room_members

    stored = seeded(data_dir)["messages"]
    with SmoothStack(data_dir, mongo_in_memory=bool(in_memory)).running() as stack:
        settings = stack.settings
        assert settings is not None
        if in_memory:
            stored = seed_running(settings.mongo_url, in_memory)
        client = pymongo.MongoClient(settings.mongo_url)
        db = client["smooth"]
        summaries = ensure_summaries(db)
        set_community(settings.redis_url, COMMUNITY, [USER, PEER], CHANNELS)
        for room in ROOMS:
            set_room_members(settings.redis_url, room, [USER, PEER])
        token = mint_token(settings.jwt_secret, USER)
        port = settings.chat_http_port
        _warm_database(db)
        _warm_worker(port, token)
        page = _series(port, token, requests, lambda n: (
            "GET", f"/chat-server/community?ch_id={_channel_of(n)}&page=0&size=50", None),
            check=_pages_are(stored, 0))
        deep = _series(port, token, requests // 4, lambda n: (
            "GET", f"/chat-server/community?ch_id={_channel_of(n)}&page=40&size=50", None),
            check=_pages_are(stored, 40))
        count_body = {"userId": USER, "roomIds": ROOMS}
        _clear_marks(db)  # never read by USER (a killed earlier run may have left marks)
        _peer_has_read_everything(db)
        count = _series(port, token, requests, lambda n: ("POST", "/chat-server/message-count", count_body),
                        check=_counts_are(_unread_never_read(stored)))
        marks = _marks_leaving_unread(db, UNREAD_AFTER_MARK)
        _set_marks(db, marks)
        new_messages: list[Any] = []
        try:
            marked = _series(port, token, requests, lambda n: ("POST", "/chat-server/message-count", count_body),
                             check=_counts_are({room: n for room, (_, n) in marks.items()}))
            _read_now_then_new_messages(db, settings, UNREAD_AFTER_MARK, new_messages)
            read_now = _series(port, token, requests, lambda n: ("POST", "/chat-server/message-count", count_body),
                               check=_counts_are(dict.fromkeys(ROOMS, UNREAD_AFTER_MARK)))
        finally:
            _delete_new_messages(settings, new_messages)
            _clear_marks(db, user=None)
            client.close()
    result = {"stored_messages": stored, "summary_rebuild": summaries,
              "page0": page[0], "page0_status": page[1], "page0_sample": str(page[2]),
              "page40": deep[0], "page40_status": deep[1], "count100": count[0], "count100_status": count[1],
              "count_sample": str(count[2]), "count100_marked": marked[0], "count100_marked_status": marked[1],
              "count_marked_unread": sorted({n for _, n in marks.values()}),
              "count100_read_now": read_now[0], "count100_read_now_status": read_now[1]}
    rows = [{"query": q, "stored_messages": stored, "requests": r[0]["count"], "p50_ms": r[0]["p50"],
             "p99_ms": r[0]["p99"], "max_ms": r[0]["max"], "status": r[1]}
            for q, r in (("page of 50 (page 0)", page), ("page of 50 (page 40)", deep),
                         ("message-count, 100 rooms, never read", count),
                         (f"message-count, 100 rooms, {UNREAD_AFTER_MARK} unread after a mark set in the past", marked),
                         (f"message-count, 100 rooms, read now, then {UNREAD_AFTER_MARK} new", read_now))]
    print(table("history", rows, COLUMNS), flush=True)
    return result


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    note = f"{result['stored_messages']:,} stored messages"
    ok_page = result["page0_status"].get(200) == result["page0"]["count"] and "wrong_answer" not in result["page0_status"]
    ok_count = (result["count100_status"].get(200) == result["count100"]["count"]
                and "wrong_answer" not in result["count100_status"])
    page = verdict("history_p99", result["page0"]["p99"], note if ok_page else f"{note}; answers {result['page0_status']}")
    marked, read_now = result.get("count100_marked"), result.get("count100_read_now")
    count_note = f"{note}; never read" + (f" (with {UNREAD_AFTER_MARK} unread after a mark set in the past: "
                                          f"p99 {marked['p99']} ms)" if marked else "")
    count_note += (f" (read now, then {UNREAD_AFTER_MARK} new: p99 {read_now['p99']} ms)" if read_now else "")
    count = verdict("count_100", result["count100"]["p99"],
                    count_note if ok_count else f"{count_note}; answers {result['count100_status']}")
    for item, ok in ((page, ok_page), (count, ok_count)):
        if not ok:
            item["verdict"] = "MISS"  # a fast error is not a pass
    return [page, count]
