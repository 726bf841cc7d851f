"""Persistent SQLite outbox: ordering, retry times, restarts, no secrets."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading

import pytest

from fatigue_llm.intervention.outbox import DEAD, SENT, Outbox, OutboxError


def test_enqueue_due_and_mark_sent(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite3")
    first = box.enqueue("escalation", {"features": {"eye_closure_ratio": 0.3}}, now=100.0)
    second = box.enqueue("escalation", {"n": 2}, now=101.0)
    assert box.pending_count() == 2
    assert [item.id for item in box.due(now=101.0)] == [first, second]
    assert box.due(now=99.0) == []
    box.mark_sent(first, {"level": "WARNING"}, now=102.0)
    item = box.get(first)
    assert item.status == SENT and item.response == {"level": "WARNING"} and item.attempts == 1
    assert [item.id for item in box.due(now=200.0)] == [second] and box.pending_count() == 1
    with pytest.raises(KeyError):
        box.mark_sent(first, {})  # already sent
    box.close()


def test_failed_items_wait_for_their_retry_time(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3")
    item_id = box.enqueue("escalation", {"n": 1}, now=10.0)
    box.mark_failed(item_id, "HTTP 503 from https://api.example.com", retry_at=40.0)
    assert box.due(now=39.9) == []
    (item,) = box.due(now=40.0)
    assert item.attempts == 1 and "503" in item.last_error and box.next_due_s() == 40.0
    box.mark_dead(item_id, "gave up", now=50.0)
    assert box.pending_count() == 0 and box.get(item_id).status == DEAD and box.next_due_s() is None
    box.close()


def test_pending_items_survive_close_and_reopen(tmp_path):
    path = tmp_path / "nested" / "outbox.sqlite3"
    box = Outbox(path)
    item_id = box.enqueue("escalation", {"features": {"time_awake": 18.5}})
    box.close()
    box = Outbox(path)
    assert box.pending_count() == 1
    (item,) = box.due()
    assert item.id == item_id and item.payload == {"features": {"time_awake": 18.5}}
    box.mark_sent(item_id, {"ok": True})  # delivered after recovery
    box.close()
    assert Outbox(path).pending_count() == 0


def test_pending_items_survive_a_killed_process(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    code = (
        "import os; from fatigue_llm.intervention.outbox import Outbox; "
        f"b = Outbox({str(path)!r}); b.enqueue('escalation', {{'n': 7}}); os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 9
    box = Outbox(path)
    assert [item.payload for item in box.due()] == [{"n": 7}]
    box.close()


def test_secrets_are_never_stored(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3")
    for payload in ({"Authorization": "Bearer abc"}, {"meta": {"api_key": "x"}}, {"list": [{"token": "t"}]}):
        with pytest.raises(ValueError, match="never stores credentials") as info:
            box.enqueue("escalation", payload)
        assert "abc" not in str(info.value)
    with pytest.raises(ValueError, match="plain JSON"):
        box.enqueue("escalation", {"x": float("nan")})
    item_id = box.enqueue("escalation", {"n": 1})
    box.mark_failed(item_id, "401 for header Bearer sk-live-SECRET", retry_at=0.0)
    assert "SECRET" not in box.get(item_id).last_error
    box.close()
    raw = sqlite3.connect(tmp_path / "o.sqlite3").execute("SELECT * FROM outbox").fetchall()
    assert "SECRET" not in repr(raw) and "abc" not in repr(raw)


def test_concurrent_writers_from_threads(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3")
    def writer() -> None:
        for i in range(50):
            box.enqueue("k", {"i": i})

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert box.pending_count() == 200
    box.close()


def test_unopenable_outbox_names_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError, match="file/outbox.sqlite3"):
        Outbox(blocker / "outbox.sqlite3")
