"""FAISS case-store benchmark: exact (IndexFlatIP) vs approximate (IndexHNSWFlat) search.

For each store size: build time, single-query search latency (p50/p95 in microseconds) for the
number of candidates ``CaseStore.search`` fetches (``max(4k, k + 16)``), and recall of HNSW against the
exact answer (recall@k of the final top-k and of the candidate list). The HNSW parameters are the case
store's own. It also times ``CaseStore.search`` end to end (FAISS + re-ranking + SQLite reads).

Keys are synthetic but shaped like the projector's retrieval keys: clustered driver states (a few
hundred typical situations plus noise) with a constant positive baseline component, unit norm.

    .venv/bin/python bench/bench_faiss.py [--sizes 10000 100000] [--queries 1000] [--dim 16]

Writes a table to stdout and JSON to bench/results/faiss.json. Runs in well under 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from fatigue_llm.intervention import casestore
from fatigue_llm.intervention.casestore import Case, CaseStore
from fatigue_llm.llm.config import LlmConfig

try:
    from fatigue_llm.intervention.projector import KEY_DIM
except ImportError:  # the projector is optional for this benchmark
    KEY_DIM = 16

RESULTS = Path(__file__).resolve().parent / "results" / "faiss.json"
K = 3  # LlmConfig.retrieval_k default
N_CLUSTERS = 300
CLUSTER_SPREAD = 0.35


def synthetic_keys(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray) -> np.ndarray:
    """Unit keys: a random cluster centre plus Gaussian noise, last component a positive baseline."""
    x = centres[rng.integers(0, len(centres), n)] + CLUSTER_SPREAD * rng.standard_normal((n, dim))
    x[:, -1] = 0.5
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build(kind: str, keys: np.ndarray) -> tuple[faiss.Index, float]:
    """An index of ``kind`` ("flat" / "hnsw") holding ``keys``, and its build time in seconds."""
    started = time.perf_counter()
    index = casestore.new_index(keys.shape[1], count=1 if kind == "hnsw" else 0, hnsw_threshold=1)
    index.add(keys)
    return index, time.perf_counter() - started


def latencies_us(search, queries: np.ndarray) -> np.ndarray:
    """Wall time of one call per query, in microseconds (after a short warm-up)."""
    for q in queries[:20]:
        search(q)
    times = np.empty(len(queries))
    for i, q in enumerate(queries):
        started = time.perf_counter_ns()
        search(q)
        times[i] = (time.perf_counter_ns() - started) / 1000.0
    return times


def percentiles(times_us: np.ndarray) -> dict[str, float]:
    return {f"p{p}_us": round(float(np.percentile(times_us, p)), 1) for p in (50, 95)}


def recall(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-k ids that the approximate top-k found."""
    hits = [len(set(a[:k]) & set(e[:k])) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits)) / k


def bench_index(
    n: int, keys: np.ndarray, queries: np.ndarray, n_candidates: int, threads: tuple[int, int]
) -> list[dict]:
    """Flat and HNSW rows for one store size; ``threads`` = (OpenMP threads to build, to search)."""
    faiss.omp_set_num_threads(threads[0])
    flat, flat_build = build("flat", keys)
    hnsw, hnsw_build = build("hnsw", keys)
    faiss.omp_set_num_threads(threads[1])
    hnsw.hnsw.efSearch = max(casestore.HNSW_EF_SEARCH, n_candidates)
    _, exact = flat.search(queries, n_candidates)
    _, approx = hnsw.search(queries, n_candidates)
    rows = []
    for kind, index, build_s in (("flat", flat, flat_build), ("hnsw", hnsw, hnsw_build)):
        times = latencies_us(lambda q, index=index: index.search(q[None, :], n_candidates), queries)
        exact_kind = kind == "flat"
        rows.append({
            "n": n, "index": kind, "build_s": round(build_s, 3), **percentiles(times),
            f"recall@{K}": 1.0 if exact_kind else round(recall(approx, exact, K), 4),
            f"recall@{n_candidates}": 1.0 if exact_kind else round(recall(approx, exact, n_candidates), 4),
        })
    return rows


def bench_store(n: int, keys: np.ndarray, queries: np.ndarray, hnsw_threshold: int) -> dict:
    """``CaseStore.search`` end to end (FAISS, re-ranking, SQLite reads of the k results)."""
    with tempfile.TemporaryDirectory() as folder:
        store = CaseStore.open(Path(folder), dim=keys.shape[1], hnsw_threshold=hnsw_threshold)
        started = time.perf_counter()
        for i, key in enumerate(keys):
            store.add(Case(features={}, embedding=key, intervention="suggest_break", action="suggest_break",
                           level=2, effectiveness=0.5, driver_id=f"d{i % 50}", timestamp_s=float(i)))
        store.save()
        build_s = time.perf_counter() - started
        times = latencies_us(lambda q: store.search(q, K, driver_id="d7"), queries)
        kind = "hnsw" if isinstance(store._index, faiss.IndexHNSW) else "flat"
        store.close()
    return {"n": n, "index": f"CaseStore/{kind}", "build_s": round(build_s, 3), **percentiles(times)}


def table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    widths = {c: max(len(c), *(len(str(row.get(c, ""))) for row in rows)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in columns)]
    lines += ["  ".join(str(row.get(c, "")).rjust(widths[c]) for c in columns) for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="store sizes")
    parser.add_argument("--queries", type=int, default=1000, help="queries timed per index")
    parser.add_argument("--dim", type=int, default=KEY_DIM, help="key dimension (projector: %(default)s)")
    parser.add_argument("--store-size", type=int, default=10_000, help="CaseStore end-to-end size (0 = skip)")
    parser.add_argument("--threads", type=int, default=2, help="FAISS OpenMP threads for index builds")
    parser.add_argument("--search-threads", type=int, default=1,
                        help="FAISS OpenMP threads while timing single queries (more threads only add "
                             "synchronisation cost, and latency spikes on busy shared cores)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((N_CLUSTERS, args.dim))
    n_candidates = max(4 * K, K + 16)
    queries = synthetic_keys(rng, args.queries, args.dim, centres)
    rows = []
    for n in args.sizes:
        keys = synthetic_keys(rng, n, args.dim, centres)
        rows += bench_index(n, keys, queries, n_candidates, (args.threads, args.search_threads))
        print(table(rows), end="\n\n", flush=True)
    if args.store_size:
        faiss.omp_set_num_threads(args.search_threads)
        keys = synthetic_keys(rng, args.store_size, args.dim, centres)
        rows.append(bench_store(args.store_size, keys, queries, hnsw_threshold=10**9))
        rows.append(bench_store(args.store_size, keys, queries, LlmConfig().hnsw_threshold))
    print(table(rows))
    result = {
        "benchmark": "faiss case store", "dim": args.dim, "k": K, "candidates": n_candidates,
        "queries": args.queries,
        "hnsw": {"M": casestore.HNSW_M, "efConstruction": casestore.HNSW_EF_CONSTRUCTION,
                 "efSearch": max(casestore.HNSW_EF_SEARCH, n_candidates)},
        "faiss": faiss.__version__, "numpy": np.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "omp_threads_build": args.threads, "omp_threads_search": args.search_threads,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
