"""FAISS case memory: past interventions, how well they worked, found again by similarity.

On disk a store is a folder:

- ``cases.sqlite3`` — the source of truth: one row per case (features as JSON, the embedding as a
  float32 blob, intervention, action, level, effectiveness with its observation count, driver, time).
- ``index.faiss`` — the FAISS index over the unit-length embeddings, a cache that can always be rebuilt
  from the SQLite rows (it is, with a warning, when it is missing, unreadable or does not match them).

Similarity is cosine similarity, computed as the inner product of unit vectors. Below ``hnsw_threshold``
cases the index is exact (``IndexFlatIP``); at or above it the store switches itself to an approximate
``IndexHNSWFlat`` with the inner-product metric.

Ranking. FAISS returns the ``max(4k, k + 16)`` most similar candidates, which are re-ranked by

    score = similarity + W_EFFECT * trust * (effectiveness - 0.5) + W_DRIVER * same_driver
    trust = n / (n + N_PRIOR)

where ``n`` is how many times the case's effectiveness was measured (a seed row counts as one
observation), ``N_PRIOR = 2``, ``W_EFFECT = 0.2`` and ``W_DRIVER = 0.1`` (``same_driver`` is 1 when the
case belongs to the driver being searched for). A case that measurably worked moves up, one that did not
moves down, by at most ``W_EFFECT / 2 = 0.1``, so similarity still dominates.

Durability. Changes (``add``, ``record_effectiveness``) are held in one open SQLite transaction and become
durable at ``save()``: the index is written to a temporary file first, then the transaction is committed,
then the temporary file replaces ``index.faiss`` (``os.replace``). A failure before the commit leaves the
previous store untouched; a crash between the commit and the replace leaves an index that no longer
matches the rows, which ``open`` detects and rebuilds.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from fatigue_llm.features.types import RENAMED_COLUMNS, SEED_FEATURES, FatigueFeatures, renamed_column_hint
from fatigue_llm.intervention.types import ACTIONS, Level

log = logging.getLogger(__name__)

DB_NAME = "cases.sqlite3"
INDEX_NAME = "index.faiss"
W_EFFECT = 0.2
W_DRIVER = 0.1
N_PRIOR = 2.0
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 96

SEED_COLUMNS = (*SEED_FEATURES, "intervention", "effectiveness")
OPTIONAL_SEED_COLUMNS = ("level", "action")
# the action used for a seed row that names none (and whose intervention is no catalogue action)
LEVEL_ACTIONS = {
    Level.INFO: "none",
    Level.ADVISORY: "dashboard_notice",
    Level.WARNING: "audio_chime",
    Level.CRITICAL: "alert_audio_haptic",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
    id INTEGER PRIMARY KEY,
    features TEXT NOT NULL,
    embedding BLOB NOT NULL,
    intervention TEXT NOT NULL,
    action TEXT NOT NULL,
    level INTEGER NOT NULL,
    effectiveness REAL NOT NULL,
    effect_count INTEGER NOT NULL,
    driver_id TEXT NOT NULL,
    timestamp_s REAL NOT NULL
);
"""


class CaseStoreError(RuntimeError):
    """The case store cannot be opened, read or written; the message names the file and the cause."""


class SeedFormatError(ValueError):
    """A seed CSV is malformed; the message names the file, line, column and value."""


@dataclass(frozen=True, eq=False)
class Case:
    """One past intervention: the situation (features + embedding), what was done and how well it worked."""

    features: dict[str, float]
    embedding: np.ndarray
    intervention: str
    action: str
    level: int
    effectiveness: float
    driver_id: str
    timestamp_s: float
    case_id: int = -1


@dataclass(frozen=True)
class RetrievedCase:
    """A search hit: the case, its cosine similarity to the query and its re-ranking score."""

    case: Case
    similarity: float
    score: float


def seed_level(features: FatigueFeatures) -> Level:
    """The level of a seed row that carries none, from its features (first match wins).

    CRITICAL: PERCLOS >= 0.30 or >= 5 head nods/min; WARNING: PERCLOS >= 0.15 or >= 2 nods/min;
    ADVISORY: PERCLOS >= 0.08, blink rate >= 25/min or > 16 h awake; INFO otherwise. The PERCLOS
    steps are the ``InterventionConfig`` defaults (Wierwille et al. 1994; Dinges & Grace 1998).
    """
    perclos, nods = features.eye_closure_ratio, features.head_nod
    if perclos >= 0.30 or nods >= 5.0:
        return Level.CRITICAL
    if perclos >= 0.15 or nods >= 2.0:
        return Level.WARNING
    if perclos >= 0.08 or features.blink_frequency >= 25.0 or features.time_awake > 16.0:
        return Level.ADVISORY
    return Level.INFO


def unit(vector: np.ndarray, dim: int) -> np.ndarray:
    """``vector`` as a float32 unit vector of length ``dim``.

    Raises:
        ValueError: wrong length, a non-finite entry or a zero vector.
    """
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if v.shape[0] != dim:
        raise ValueError(f"embedding has {v.shape[0]} dimensions, the store has {dim}")
    if not np.all(np.isfinite(v)):
        raise ValueError("embedding has a non-finite entry")
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        raise ValueError("embedding is the zero vector (no direction for cosine similarity)")
    return v / norm


def rerank_score(similarity: float, effectiveness: float, effect_count: int, same_driver: bool) -> float:
    """The ranking score of a candidate (formula in the module docstring)."""
    trust = effect_count / (effect_count + N_PRIOR)
    return similarity + W_EFFECT * trust * (effectiveness - 0.5) + (W_DRIVER if same_driver else 0.0)


def _locked(method: Callable) -> Callable:
    """Run a ``CaseStore`` method under the store's lock."""

    @functools.wraps(method)
    def wrapper(self: CaseStore, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def new_index(dim: int, count: int, hnsw_threshold: int) -> faiss.Index:
    """An empty index of the kind a store of ``count`` cases uses (flat below the threshold, else HNSW)."""
    if count >= hnsw_threshold:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        return index
    return faiss.IndexFlatIP(dim)


def _is_hnsw(index: faiss.Index) -> bool:
    return isinstance(index, faiss.IndexHNSW)


def _write_index(index: faiss.Index, path: Path) -> None:
    """Write ``index`` to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class CaseStore:
    """Case memory over SQLite rows and a FAISS index (see the module docstring); thread-safe (one lock)."""

    def __init__(self, folder: Path, db: sqlite3.Connection, dim: int, hnsw_threshold: int) -> None:
        self.folder, self.dim, self.hnsw_threshold = folder, dim, hnsw_threshold
        self._db = db
        self._index: faiss.Index = new_index(dim, 0, hnsw_threshold)
        self._effect: list[tuple[float, int]] = []  # (effectiveness, count) by case id, for re-ranking
        self._driver: list[str] = []
        self._dirty = False
        self._lock = threading.RLock()

    # ----------------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: Path, dim: int, hnsw_threshold: int) -> CaseStore:
        """Open the store in folder ``path`` (created when absent).

        Raises:
            ValueError: ``dim`` or ``hnsw_threshold`` is not positive.
            CaseStoreError: the folder cannot be created, the database is unreadable, or the store was
                created with another embedding dimension.
        """
        if dim <= 0 or hnsw_threshold <= 0:
            raise ValueError(f"dim and hnsw_threshold must be positive, got {dim}, {hnsw_threshold}")
        folder = Path(path)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(folder / DB_NAME, check_same_thread=False)
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise CaseStoreError(f"{folder / DB_NAME}: cannot open the case store: {error}") from error
        store = cls(folder, db, dim, hnsw_threshold)
        try:
            store._check_dim()
            store._load()
        except BaseException:
            db.close()
            raise
        return store

    def _check_dim(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
        if row is None:
            with self._db:
                self._db.execute("INSERT INTO meta VALUES ('dim', ?)", (str(self.dim),))
        elif int(row[0]) != self.dim:
            raise CaseStoreError(f"{self.folder / DB_NAME}: the store holds {row[0]}-dimensional "
                                 f"embeddings, asked for {self.dim}")

    def _load(self) -> None:
        rows = self._db.execute(
            "SELECT id, effectiveness, effect_count, driver_id FROM cases ORDER BY id"
        ).fetchall()
        for position, (case_id, _, _, _) in enumerate(rows):
            if case_id != position:
                raise CaseStoreError(f"{self.folder / DB_NAME}: case ids are not contiguous at id {case_id}")
        self._effect = [(eff, count) for _, eff, count, _ in rows]
        self._driver = [driver for *_, driver in rows]
        problem = self._index_problem(len(rows))
        if problem is None:
            return
        log.warning("%s: %s; rebuilding the index from %s", self.folder / INDEX_NAME, problem, DB_NAME)
        self._index = self._build_index(self._all_embeddings())
        try:
            _write_index(self._index, self.folder / INDEX_NAME)
        except (OSError, RuntimeError) as error:
            log.warning("%s: could not write the rebuilt index (kept in memory): %s", self.folder, error)

    def _index_problem(self, count: int) -> str | None:
        """Read ``index.faiss`` into ``self._index``; what is wrong with it, or None when it fits the rows."""
        path = self.folder / INDEX_NAME
        if not path.exists():
            return "index file is missing" if count else None
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as error:
            return f"index file is unreadable ({str(error).splitlines()[0][:120]})"
        if index.d != self.dim:
            return f"index dimension {index.d} != {self.dim}"
        if index.ntotal != count:
            return f"index holds {index.ntotal} vectors, the database {count} cases"
        if _is_hnsw(index) != (count >= self.hnsw_threshold):
            return "index type does not match hnsw_threshold"
        if count and not np.allclose(index.reconstruct(count - 1), self._embedding(count - 1), atol=1e-5):
            return "index content does not match the database"
        if _is_hnsw(index):
            index.hnsw.efSearch = HNSW_EF_SEARCH
        self._index = index
        return None

    def _embedding(self, case_id: int) -> np.ndarray:
        (blob,) = self._db.execute("SELECT embedding FROM cases WHERE id = ?", (case_id,)).fetchone()
        return np.frombuffer(blob, dtype=np.float32)

    def _all_embeddings(self) -> np.ndarray:
        blobs = self._db.execute("SELECT embedding FROM cases ORDER BY id").fetchall()
        matrix = np.empty((len(blobs), self.dim), dtype=np.float32)
        for i, (blob,) in enumerate(blobs):
            matrix[i] = np.frombuffer(blob, dtype=np.float32)
        return matrix

    def _build_index(self, embeddings: np.ndarray) -> faiss.Index:
        index = new_index(self.dim, len(embeddings), self.hnsw_threshold)
        if len(embeddings):
            index.add(embeddings)
        return index

    # ----------------------------------------------------------------------------------------- writing
    @_locked
    def __len__(self) -> int:
        return self._index.ntotal

    @_locked
    def add(self, case: Case) -> int:
        """Add ``case`` (its ``case_id`` is ignored) and return its new id; durable after ``save()``.

        Raises:
            ValueError: bad embedding (see ``unit``), unknown action, or effectiveness outside [0, 1].
        """
        embedding = unit(case.embedding, self.dim)
        if case.action not in ACTIONS:
            raise ValueError(f"action {case.action!r} is not in the catalogue {sorted(ACTIONS)}")
        if not 0.0 <= case.effectiveness <= 1.0:
            raise ValueError(f"effectiveness must be in [0, 1], got {case.effectiveness}")
        case_id = len(self)
        self._db.execute(
            "INSERT INTO cases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (case_id, json.dumps(case.features), embedding.tobytes(), case.intervention, case.action,
             int(case.level), float(case.effectiveness), 1, case.driver_id, float(case.timestamp_s)),
        )
        if len(self) + 1 == self.hnsw_threshold:
            log.info("case store reached %d cases: switching to an HNSW index", self.hnsw_threshold)
            self._index = self._build_index(np.vstack([self._reconstruct_all(), embedding[None, :]]))
        else:
            self._index.add(embedding[None, :])
        self._effect.append((float(case.effectiveness), 1))
        self._driver.append(case.driver_id)
        self._dirty = True
        return case_id

    def _reconstruct_all(self) -> np.ndarray:
        if len(self) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return self._index.reconstruct_n(0, len(self))

    @_locked
    def record_effectiveness(self, case_id: int, value: float) -> float:
        """Fold a measured effectiveness into the case's running mean; returns the new mean.

        Raises:
            KeyError: no such case.
            ValueError: ``value`` outside [0, 1].
        """
        if not 0 <= case_id < len(self):
            raise KeyError(f"no case with id {case_id} (store holds {len(self)})")
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"effectiveness must be in [0, 1], got {value}")
        mean, count = self._effect[case_id]
        mean, count = (mean * count + value) / (count + 1), count + 1
        self._db.execute(
            "UPDATE cases SET effectiveness = ?, effect_count = ? WHERE id = ?", (mean, count, case_id)
        )
        self._effect[case_id] = (mean, count)
        self._dirty = True
        return mean

    @_locked
    def save(self) -> None:
        """Make all changes durable, atomically (see the module docstring).

        Raises:
            CaseStoreError: the index or the database could not be written; the previous store is intact.
        """
        path = self.folder / INDEX_NAME
        tmp = path.with_name(path.name + ".tmp")
        try:
            faiss.write_index(self._index, str(tmp))
            self._db.commit()
            os.replace(tmp, path)
        except (OSError, RuntimeError, sqlite3.Error) as error:
            message = f"{path}: saving the case store failed, previous state kept: {error}"
            raise CaseStoreError(message) from error
        finally:
            tmp.unlink(missing_ok=True)
        self._dirty = False

    @_locked
    def close(self, save: bool = True) -> None:
        """Save pending changes (unless ``save`` is False: they are discarded) and close the database.

        Raises:
            CaseStoreError: the final save failed (the database is closed all the same).
        """
        try:
            if save and self._dirty:
                self.save()
        finally:
            self._db.close()

    # ----------------------------------------------------------------------------------------- reading
    @_locked
    def get(self, case_id: int) -> Case:
        """The case with id ``case_id``.

        Raises:
            KeyError: no such case.
        """
        row = self._db.execute("SELECT * FROM cases WHERE id = ?", (case_id,)).fetchone()
        if row is None:
            raise KeyError(f"no case with id {case_id}")
        return self._row_to_case(row)

    @staticmethod
    def _row_to_case(row: tuple) -> Case:
        case_id, features, blob, intervention, action, level, eff, _, driver, ts = row
        stored = json.loads(features)
        for old, (new, _why) in RENAMED_COLUMNS.items():  # cases stored before a feature was renamed
            if old in stored and new not in stored:
                stored[new] = stored.pop(old)
        return Case(
            features=stored, embedding=np.frombuffer(blob, dtype=np.float32).copy(),
            intervention=intervention, action=action, level=level, effectiveness=eff,
            driver_id=driver, timestamp_s=ts, case_id=case_id,
        )

    @_locked
    def search(self, embedding: np.ndarray, k: int, driver_id: str | None = None) -> list[RetrievedCase]:
        """The ``k`` best cases for ``embedding``, best first, re-ranked (see the module docstring).

        Raises:
            ValueError: bad embedding (see ``unit``) or ``k`` < 1.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        query = unit(embedding, self.dim)[None, :]
        if len(self) == 0:
            return []
        n_candidates = min(len(self), max(4 * k, k + 16))
        if _is_hnsw(self._index):
            self._index.hnsw.efSearch = max(HNSW_EF_SEARCH, n_candidates)
        similarities, ids = self._index.search(query, n_candidates)
        ranked = []
        for similarity, case_id in zip(similarities[0], ids[0], strict=True):
            if case_id < 0:
                continue  # HNSW may return fewer than asked
            eff, count = self._effect[case_id]
            score = rerank_score(float(similarity), eff, count, driver_id is not None
                                 and self._driver[case_id] == driver_id)
            ranked.append((score, float(similarity), int(case_id)))
        ranked.sort(key=lambda item: (-item[0], item[2]))
        return [RetrievedCase(self.get(cid), similarity, score) for score, similarity, cid in ranked[:k]]

    # ----------------------------------------------------------------------------------------- seeding
    def seed_from_csv(
        self, path: Path, embed: Callable[[FatigueFeatures], np.ndarray], driver_id: str = "seed"
    ) -> int:
        """Add every row of a seed CSV; returns how many were added (durable after ``save()``).

        Columns: the eight seed features, ``intervention`` and ``effectiveness`` in [0, 1], optionally
        ``level`` (name or 0-3) and ``action`` (catalogue key). Without them the level comes from
        ``seed_level`` and the action is ``intervention`` when that is a catalogue key, else the
        level's default action (``LEVEL_ACTIONS``). The file is validated completely before any row
        is added.

        Raises:
            SeedFormatError: unreadable file, missing column, or a bad value (file, line, column, value).
            ValueError: ``embed`` returned an unusable embedding.
        """
        cases = [replace(case, embedding=embed(features), driver_id=driver_id)
                 for features, case in read_seed_csv(Path(path))]
        for case in cases:
            self.add(case)
        return len(cases)


# --------------------------------------------------------------------------------------------- seed CSV
def read_seed_csv(path: Path) -> list[tuple[FatigueFeatures, Case]]:
    """Parse a seed CSV into (features, case) pairs; the cases have no embedding yet.

    Raises:
        SeedFormatError: see ``CaseStore.seed_from_csv``.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [name for name in SEED_COLUMNS if name not in header]
            if missing:
                raise SeedFormatError(f"{path}, line 1: missing column(s) {missing}; header is {header}."
                                      f"{renamed_column_hint(header)}")
            unknown = [name for name in header if name not in SEED_COLUMNS + OPTIONAL_SEED_COLUMNS]
            if unknown:
                raise SeedFormatError(f"{path}, line 1: unknown column(s) {unknown}")
            return [_parse_seed_row(path, reader.line_num, row) for row in reader]
    except OSError as error:
        raise SeedFormatError(f"{path}: cannot read the seed CSV: {error}") from error
    except csv.Error as error:
        raise SeedFormatError(f"{path}: malformed CSV: {error}") from error


def _bad(path: Path, line: int, column: str, value: object, why: str) -> SeedFormatError:
    return SeedFormatError(f"{path}, line {line}, column '{column}': value {value!r} {why}")


def _number(path: Path, line: int, row: dict, column: str) -> float:
    raw = row.get(column)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _bad(path, line, column, raw, "is not a number") from None
    if not math.isfinite(value):
        raise _bad(path, line, column, raw, "is not finite")
    return value


def _parse_level(path: Path, line: int, raw: str) -> Level:
    text = raw.strip().upper()
    if text.isdigit() and int(text) <= Level.CRITICAL:
        return Level(int(text))
    if text in Level.__members__:
        return Level[text]
    raise _bad(path, line, "level", raw, f"is not a level ({', '.join(Level.__members__)} or 0-3)")


def _parse_seed_row(path: Path, line: int, row: dict) -> tuple[FatigueFeatures, Case]:
    if None in row:
        raise _bad(path, line, "(extra)", row[None], "is beyond the header's columns")
    values = {name: _number(path, line, row, name) for name in SEED_FEATURES}
    effectiveness = _number(path, line, row, "effectiveness")
    if not 0.0 <= effectiveness <= 1.0:
        raise _bad(path, line, "effectiveness", row["effectiveness"], "is outside [0, 1]")
    intervention = (row.get("intervention") or "").strip()
    if not intervention:
        raise _bad(path, line, "intervention", row.get("intervention"), "is empty")
    features = FatigueFeatures(**values)
    level_raw = (row.get("level") or "").strip()
    level = _parse_level(path, line, level_raw) if level_raw else seed_level(features)
    action = (row.get("action") or "").strip()
    if not action:
        action = intervention if intervention in ACTIONS else LEVEL_ACTIONS[level]
    if action not in ACTIONS:
        raise _bad(path, line, "action", action, f"is not in the catalogue {sorted(ACTIONS)}")
    case = Case(features=values, embedding=np.zeros(0, dtype=np.float32), intervention=intervention,
                action=action, level=int(level), effectiveness=effectiveness, driver_id="seed",
                timestamp_s=0.0)
    return features, case
