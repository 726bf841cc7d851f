"""Persistent outbox: requests to the cloud survive network loss and process restarts.

One SQLite file in WAL mode; every change is its own transaction. An item is ``pending`` until it is
``sent`` (with the response kept) or ``dead`` (given up). ``due(now)`` lists the pending items whose
``next_attempt`` has come, oldest first.

Secrets are never stored: a payload holding a key that looks like a credential (``authorization``,
``api_key``, ``token``, ``password``, ``secret``...) is refused, and bearer tokens are masked in the
error texts that are kept.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

PENDING, SENT, DEAD = "pending", "sent", "dead"
SECRET_KEY = re.compile(r"authori[sz]ation|api[_-]?key|token|passw|secret|credential|cookie", re.IGNORECASE)
BEARER = re.compile(r"(bearer\s+)\S+", re.IGNORECASE)
MAX_ERROR_CHARS = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_s REAL NOT NULL,
    next_attempt_s REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    response TEXT,
    done_s REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_s);
"""


class OutboxError(RuntimeError):
    """The outbox file cannot be opened or written; the message names the file."""


@dataclass(frozen=True)
class OutboxItem:
    id: str
    kind: str
    payload: dict
    status: str
    attempts: int
    created_s: float
    next_attempt_s: float
    last_error: str = ""
    response: dict | None = None


def redact(text: str) -> str:
    """``text`` with bearer tokens masked, cut to ``MAX_ERROR_CHARS``."""
    return BEARER.sub(r"\1***", text)[:MAX_ERROR_CHARS]


def check_no_secrets(value: object, where: str = "payload") -> None:
    """Refuse mappings that carry credential-like keys, at any depth.

    Raises:
        ValueError: names the offending key path (never its value).
    """
    if isinstance(value, dict):
        for key, item in value.items():
            if SECRET_KEY.search(str(key)):
                raise ValueError(f"{where}.{key}: the outbox never stores credentials")
            check_no_secrets(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_no_secrets(item, f"{where}[{i}]")


def _row_to_item(row: tuple) -> OutboxItem:
    item_id, kind, payload, status, attempts, created_s, next_attempt_s, last_error, response = row
    return OutboxItem(
        id=item_id, kind=kind, payload=json.loads(payload), status=status, attempts=attempts,
        created_s=created_s, next_attempt_s=next_attempt_s, last_error=last_error,
        response=None if response is None else json.loads(response),
    )


class Outbox:
    """A SQLite-backed queue of outgoing requests; thread-safe (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the outbox at ``path``.

        Raises:
            OutboxError: the file or its folder cannot be created or read.
        """
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise OutboxError(f"{self.path}: cannot open the outbox: {error}") from error

    def _write(self, sql: str, args: tuple) -> int:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cursor = self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise OutboxError(f"{self.path}: outbox write failed: {error}") from error
            return cursor.rowcount

    def enqueue(self, kind: str, payload: dict, now: float | None = None) -> str:
        """Store a request; it is due at once. Returns its id.

        Raises:
            ValueError: the payload is not JSON-serialisable or holds credential-like keys.
            OutboxError: the write failed.
        """
        check_no_secrets(payload)
        try:
            text = json.dumps(payload, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"outbox payload is not plain JSON: {error}") from error
        item_id = uuid.uuid4().hex
        now = time.time() if now is None else now
        self._write(
            "INSERT INTO outbox (id, kind, payload, status, created_s, next_attempt_s) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (item_id, kind, text, PENDING, now, now),
        )
        return item_id

    def due(self, now: float | None = None, limit: int = 100) -> list[OutboxItem]:
        """Pending items whose next attempt time has come (``<= now``), oldest first."""
        now = time.time() if now is None else now
        return self._select(
            "WHERE status = ? AND next_attempt_s <= ? ORDER BY created_s, id LIMIT ?", (PENDING, now, limit)
        )

    def get(self, item_id: str) -> OutboxItem:
        """The item with ``item_id``.

        Raises:
            KeyError: no such item.
        """
        items = self._select("WHERE id = ?", (item_id,))
        if not items:
            raise KeyError(f"no outbox item {item_id}")
        return items[0]

    def next_due_s(self) -> float | None:
        """The earliest next-attempt time of a pending item, or None when nothing is pending."""
        with self._lock:
            (value,) = self._db.execute(
                "SELECT MIN(next_attempt_s) FROM outbox WHERE status = ?", (PENDING,)
            ).fetchone()
        return value

    def _select(self, where: str, args: tuple) -> list[OutboxItem]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, payload, status, attempts, created_s, next_attempt_s, last_error, response "
                f"FROM outbox {where}",
                args,
            ).fetchall()
        return [_row_to_item(row) for row in rows]

    def mark_sent(self, item_id: str, response: dict, now: float | None = None) -> None:
        """Record a successful delivery and its response.

        Raises:
            KeyError: no pending item with this id.
            ValueError: the response holds credential-like keys or is not plain JSON.
        """
        check_no_secrets(response, "response")
        text = json.dumps(response, allow_nan=False)
        now = time.time() if now is None else now
        self._update(item_id, "status = ?, attempts = attempts + 1, response = ?, done_s = ?",
                     (SENT, text, now))

    def mark_failed(self, item_id: str, error: str, retry_at: float) -> None:
        """Record a failed attempt; the item is due again at ``retry_at`` (epoch seconds).

        Raises:
            KeyError: no pending item with this id.
        """
        self._update(item_id, "attempts = attempts + 1, last_error = ?, next_attempt_s = ?",
                     (redact(error), retry_at))

    def mark_dead(self, item_id: str, error: str, now: float | None = None) -> None:
        """Give up on an item (it is never due again).

        Raises:
            KeyError: no pending item with this id.
        """
        now = time.time() if now is None else now
        self._update(item_id, "status = ?, last_error = ?, done_s = ?", (DEAD, redact(error), now))

    def _update(self, item_id: str, assignments: str, args: tuple) -> None:
        changed = self._write(f"UPDATE outbox SET {assignments} WHERE id = ? AND status = ?",
                              (*args, item_id, PENDING))
        if changed != 1:
            raise KeyError(f"no pending outbox item {item_id}")

    def pending_count(self) -> int:
        """How many items still wait for delivery."""
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM outbox WHERE status = ?", (PENDING,)).fetchone()
        return count

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            self._db.close()
