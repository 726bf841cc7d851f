"""FAISS case memory with real FAISS and SQLite: search, index switch, persistence, recovery, seeding."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from fatigue_llm.features.types import SEED_FEATURES, FatigueFeatures
from fatigue_llm.intervention import casestore
from fatigue_llm.intervention.casestore import (
    INDEX_NAME,
    Case,
    CaseStore,
    CaseStoreError,
    SeedFormatError,
    read_seed_csv,
    seed_level,
)
from fatigue_llm.intervention.types import Level

SEED_CSV = Path(casestore.__file__).parent / "data" / "seed_cases.csv"
# rough centre and spread of each seed feature, so that no feature dominates the embedding
CENTRE = np.array([0.15, 18.0, 2.0, 0.7, 20.0, 3.0, 0.04, 15.0], dtype=np.float32)
SPREAD = np.array([0.15, 6.0, 3.0, 0.2, 8.0, 2.5, 0.03, 6.0], dtype=np.float32)
HEADER = ",".join((*SEED_FEATURES, "intervention", "effectiveness"))


def embed(features: FatigueFeatures) -> np.ndarray:
    """Standardised seed features with a constant component (so no vector is zero)."""
    z = (np.array(features.seed_vector(), dtype=np.float32) - CENTRE) / SPREAD
    return np.append(z, 1.0).astype(np.float32)


def make_case(embedding: np.ndarray, action: str = "suggest_break", effectiveness: float = 0.5,
              driver: str = "d1", level: int = 2) -> Case:
    return Case(features={"eye_closure_ratio": 0.2}, embedding=np.asarray(embedding, dtype=np.float32),
                intervention=action, action=action, level=level, effectiveness=effectiveness,
                driver_id=driver, timestamp_s=1.0)


def random_unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_nearest_seed_case_is_found(tmp_path):
    store = CaseStore.open(tmp_path / "store", dim=9, hnsw_threshold=5000)
    assert store.seed_from_csv(SEED_CSV, embed) == len(read_seed_csv(SEED_CSV)) >= 40
    severe = FatigueFeatures(eye_closure_ratio=0.47, blink_frequency=10, head_nod=8, voice_quality=0.4,
                             steering_reversal_rate=7, speed_variance=7.6, yaw_rate=0.084, time_awake=24)
    hits = store.search(embed(severe), k=3)
    assert len(hits) == 3
    assert hits[0].case.level == Level.CRITICAL and hits[0].similarity > 0.95
    assert all(hit.case.case_id >= 0 and hit.case.driver_id == "seed" for hit in hits)
    alert = FatigueFeatures(eye_closure_ratio=0.03, blink_frequency=15, head_nod=0, voice_quality=0.93,
                            steering_reversal_rate=31, speed_variance=0.8, yaw_rate=0.012, time_awake=4)
    assert store.search(embed(alert), k=1)[0].case.action == "none"
    store.close()


def test_flat_switches_to_hnsw_at_threshold_with_same_top1(tmp_path):
    rng = np.random.default_rng(0)
    dim, n = 16, 2000
    vectors = random_unit(rng, n, dim)
    flat = CaseStore.open(tmp_path / "flat", dim=dim, hnsw_threshold=10**6)
    hnsw = CaseStore.open(tmp_path / "hnsw", dim=dim, hnsw_threshold=1000)
    for i, v in enumerate(vectors):
        flat.add(make_case(v))
        hnsw.add(make_case(v))
        if i == 998:
            assert isinstance(hnsw._index, casestore.faiss.IndexFlatIP)
    assert isinstance(hnsw._index, casestore.faiss.IndexHNSWFlat) and len(hnsw) == n
    assert hnsw._index.metric_type == casestore.faiss.METRIC_INNER_PRODUCT
    queries = vectors[rng.choice(n, 100, replace=False)] + 0.05 * rng.standard_normal((100, dim))
    same = [flat.search(q, 1)[0].case.case_id == hnsw.search(q, 1)[0].case.case_id for q in queries]
    assert sum(same) >= 99
    hnsw.save()
    hnsw.close()
    reopened = CaseStore.open(tmp_path / "hnsw", dim=dim, hnsw_threshold=1000)
    assert isinstance(reopened._index, casestore.faiss.IndexHNSWFlat) and len(reopened) == n
    reopened.close(save=False)
    flat.close(save=False)


def test_store_persists_across_reopen(tmp_path):
    store = CaseStore.open(tmp_path, dim=4, hnsw_threshold=100)
    first = store.add(make_case([1, 0, 0, 0], action="pull_over", level=3, driver="anna"))
    store.add(make_case([0, 1, 0, 0]))
    store.record_effectiveness(first, 1.0)
    store.save()
    store.close()
    store = CaseStore.open(tmp_path, dim=4, hnsw_threshold=100)
    assert len(store) == 2
    hit = store.search(np.array([0.9, 0.1, 0, 0]), k=1)[0]
    assert hit.case.case_id == first and hit.case.action == "pull_over" and hit.case.driver_id == "anna"
    assert hit.case.effectiveness == pytest.approx(0.75)  # (0.5 + 1.0) / 2
    assert hit.case.features == {"eye_closure_ratio": 0.2}
    np.testing.assert_allclose(hit.case.embedding, [1, 0, 0, 0])
    with pytest.raises(CaseStoreError, match="4-dimensional"):
        CaseStore.open(tmp_path, dim=5, hnsw_threshold=100)
    store.close()


def test_corrupt_or_missing_index_is_rebuilt_from_sqlite(tmp_path, caplog):
    store = CaseStore.open(tmp_path, dim=4, hnsw_threshold=100)
    for v in np.eye(4):
        store.add(make_case(v))
    store.close()
    (tmp_path / INDEX_NAME).write_bytes(b"not a faiss index at all")
    with caplog.at_level(logging.WARNING):
        store = CaseStore.open(tmp_path, dim=4, hnsw_threshold=100)
    assert "unreadable" in caplog.text and "rebuilding" in caplog.text
    assert len(store) == 4 and store.search(np.array([0, 0, 1, 0]), 1)[0].case.case_id == 2
    store.close()

    # an index that holds fewer vectors than the database (a crash between commit and replace)
    small = casestore.faiss.IndexFlatIP(4)
    small.add(np.eye(4, dtype=np.float32)[:2])
    casestore.faiss.write_index(small, str(tmp_path / INDEX_NAME))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        store = CaseStore.open(tmp_path, dim=4, hnsw_threshold=100)
    assert "holds 2 vectors" in caplog.text and len(store) == 4
    store.close()

    (tmp_path / INDEX_NAME).unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        store = CaseStore.open(tmp_path, dim=4, hnsw_threshold=100)
    assert "missing" in caplog.text and store.search(np.array([0, 0, 0, 1]), 1)[0].case.case_id == 3
    store.close()


def test_interrupted_save_leaves_old_store_intact(tmp_path, monkeypatch):
    store = CaseStore.open(tmp_path, dim=4, hnsw_threshold=100)
    store.add(make_case([1, 0, 0, 0]))
    store.save()
    old_index = (tmp_path / INDEX_NAME).read_bytes()
    store.add(make_case([0, 1, 0, 0]))
    store.record_effectiveness(0, 1.0)

    def half_written(index, path):  # the disk fills up while the new index is written
        Path(path).write_bytes(b"\x00" * 10)
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(casestore.faiss, "write_index", half_written)
    with pytest.raises(CaseStoreError, match="previous state kept"):
        store.save()
    monkeypatch.undo()
    store.close(save=False)
    assert (tmp_path / INDEX_NAME).read_bytes() == old_index
    assert not list(tmp_path.glob("*.tmp"))
    store = CaseStore.open(tmp_path, dim=4, hnsw_threshold=100)
    assert len(store) == 1 and store.get(0).effectiveness == 0.5
    store.close()


def test_effectiveness_and_same_driver_change_the_ranking(tmp_path):
    store = CaseStore.open(tmp_path, dim=3, hnsw_threshold=100)
    a = store.add(make_case([1.0, 0.10, 0], action="audio_chime", driver="other"))
    b = store.add(make_case([1.0, 0.12, 0], action="suggest_break", driver="other"))
    query = np.array([1.0, 0.09, 0])
    assert [h.case.case_id for h in store.search(query, 2)] == [a, b]
    for _ in range(4):  # the break measurably worked, the chime did not
        store.record_effectiveness(b, 0.95)
        store.record_effectiveness(a, 0.1)
    hits = store.search(query, 2)
    assert [h.case.case_id for h in hits] == [b, a]
    assert hits[0].similarity < hits[1].similarity and hits[0].score > hits[1].score
    c = store.add(make_case([1.0, 0.2, 0], action="ventilation", driver="me"))
    assert store.search(query, 1)[0].case.case_id == b
    assert store.search(query, 1, driver_id="me")[0].case.case_id == c
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        store.record_effectiveness(a, 1.5)
    with pytest.raises(KeyError):
        store.record_effectiveness(99, 0.5)
    store.close()


def test_bad_embeddings_and_cases_are_rejected(tmp_path):
    store = CaseStore.open(tmp_path, dim=3, hnsw_threshold=100)
    with pytest.raises(ValueError, match="dimensions"):
        store.add(make_case([1, 0]))
    with pytest.raises(ValueError, match="zero vector"):
        store.add(make_case([0, 0, 0]))
    with pytest.raises(ValueError, match="non-finite"):
        store.search(np.array([np.nan, 0, 1]), 1)
    with pytest.raises(ValueError, match="catalogue"):
        store.add(make_case([1, 0, 0], action="honk"))
    assert store.search(np.array([1, 0, 0]), 3) == []
    store.close()


def test_seed_csv_rule_matches_the_bundled_levels_and_ten_columns_load(tmp_path):
    for features, case in read_seed_csv(SEED_CSV):
        assert seed_level(features) == case.level
        assert 0.0 <= case.effectiveness <= 1.0
    ten = tmp_path / "ten.csv"
    ten.write_text(f"{HEADER}\n0.35,12,6,0.5,9,6,0.07,22,pull_over,0.9\n"
                   "0.10,22,0.5,0.8,24,1.8,0.022,12,rest advice,0.6\n")
    (f1, c1), (f2, c2) = read_seed_csv(ten)
    assert (c1.level, c1.action) == (Level.CRITICAL, "pull_over")
    assert (c2.level, c2.action, c2.intervention) == (Level.ADVISORY, "dashboard_notice", "rest advice")
    store = CaseStore.open(tmp_path / "s", dim=9, hnsw_threshold=100)
    assert store.seed_from_csv(ten, embed, driver_id="fleet") == 2
    assert store.get(1).driver_id == "fleet"
    store.close()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("0.1,x,0,0.8,24,1.8,0.02,12,rest,0.6", "line 2, column 'blink_frequency': value 'x' is not a"),
        ("0.1,20,0,0.8,24,1.8,0.02,12,rest,1.6", "line 2, column 'effectiveness': value '1.6' is outside"),
        ("0.1,20,0,0.8,24,1.8,0.02,nan,rest,0.6", "line 2, column 'time_awake': value 'nan' is not finite"),
        ("0.1,20,0,0.8,24,1.8,0.02,12,,0.6", "line 2, column 'intervention'"),
        ("0.1,20,0,0.8,24,1.8,0.02,12,rest,0.6,9", "line 2, column '(extra)'"),
        ("0.1,20,0,0.8,24,1.8,0.02,12,rest", "line 2, column 'effectiveness': value None"),
    ],
)
def test_bad_seed_csv_names_file_line_column_value(tmp_path, body, message):
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{HEADER}\n{body}\n")
    with pytest.raises(SeedFormatError) as info:
        read_seed_csv(bad)
    assert str(bad) in str(info.value) and message in str(info.value)


def test_bad_seed_header_and_level_action_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("eye_closure_ratio,intervention\n0.1,rest\n")
    with pytest.raises(SeedFormatError, match="line 1: missing column"):
        read_seed_csv(bad)
    bad.write_text(f"{HEADER},level,action\n0.1,20,0,0.8,24,1.8,0.02,12,rest,0.6,SEVERE,\n")
    with pytest.raises(SeedFormatError, match="line 2, column 'level': value 'SEVERE'"):
        read_seed_csv(bad)
    bad.write_text(f"{HEADER},level,action\n0.1,20,0,0.8,24,1.8,0.02,12,rest,0.6,2,honk\n")
    with pytest.raises(SeedFormatError, match="line 2, column 'action': value 'honk'"):
        read_seed_csv(bad)
    with pytest.raises(SeedFormatError, match="cannot read"):
        read_seed_csv(tmp_path / "absent.csv")
