"""Replay evaluation benchmark: offline evaluation vs real time, bag read throughput, fleet speed-up.

Bags are simulated first (``fatigue_llm.sim.simulate``, scenario highway_drowsiness, under a temporary folder):
the 10-minute observation-level drive (driver/observation, vehicle/signals, truth/fatigue) as MCAP and as
sqlite3, a short camera drive (``--camera``: camera/image_raw frames rendered by the face renderer, MediaPipe
runs on them in the replay), and N fleet copies of the long drive with other seeds. Then:

1. **Real time.** Wall time of ``offline_trace(bag, options)`` (read + decode + replay through the node core
   code, no LLM) and of the full single-bag ``evaluate`` (plus metrics, results.jsonl, metrics.json,
   report.html), as a multiple of the drive's length (target >= 50x for the observation-level drive), with a
   breakdown (trace / ``compute_metrics`` / ``write_report``). The camera drive's ``offline_trace`` shows
   what perception costs (and its per-frame ``perception_ms`` p50 from the trace). One untimed warm-up first
   (imports, matplotlib), reported as ``first_s``.
2. **Bag reads.** One pass (open + all messages + close) of our reader (``open_bag(p).messages()``, with and
   without ``.decode()``) and of rosbags' ``rosbags.highlevel.AnyReader`` (``messages()``, with and without
   ``deserialize``) on the same bag, interleaved pass by pass; messages/s, MB/s of CDR payload, and the ratio
   ours / rosbags of throughput (< 1: ours is slower). Both readers decode with the project's typestore.
3. **Fleet.** ``evaluate(fleet, out, options)`` with ``workers=1``, ``workers=2`` (processes) and
   ``ray_address="local"`` (a fresh local Ray on this machine's CPUs, started and shut down inside the call:
   "ray cold"), interleaved per repeat; then ``ray.init`` (same arguments as evaluate's), the same call on the
   running Ray ("ray warm", after a first run timed apart: it pays the workers' imports), ``ray.shutdown``,
   each timed apart. ``cpu_s`` is user+sys of this process and its reaped children (serial and process runs;
   Ray's workers are not our children). A pure-Python CPU check (the same work alone, then twice at once in
   two processes) before and after the fleet runs says how many of the 2 shared cores were usable. The merged
   ``metrics.json`` of every run is compared with the serial one after dropping timing fields (stage latency,
   tokens/s) and making output paths relative.

Optionally (default on) ``offline_trace`` of the long drive is run under cProfile and the hottest lines are
kept. Every timed part is repeated (``--repeats``, reads ``--read-repeats``); medians are reported. The
machine has 2 shared cores, so absolute numbers are noisy: compare the ratios measured side by side. The load
average is recorded at start and end.

    .venv/bin/python bench/bench_replay.py [--quick] [--repeats 3] [--fleet 4] [--no-ray] [--no-profile]

Prints markdown tables and the JSON; writes bench/results/replay.json (atomically). About 3-4 minutes on
2 cores; ``--quick`` (1 repeat, 60 s drives, 5 s camera) is a smoke run of well under a minute.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

from fatigue_llm.bags import open_bag
from fatigue_llm.evaluation.criteria import check_criteria
from fatigue_llm.evaluation.evaluate import METRICS, EvalOptions, evaluate, offline_trace
from fatigue_llm.evaluation.metrics import compute_metrics
from fatigue_llm.sim.scenario import load_scenario
from fatigue_llm.sim.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "replay.json"
SCENARIO = ROOT / "configs" / "scenarios" / "highway_drowsiness.yaml"
TARGET_X = 50.0                      # offline evaluation of the observation-level drive, x real time
TIMING_KEYS = frozenset({"stage_latency_ms", "stage_p95_ms", "llm_tokens_per_s"})  # differ run to run
WATCH = ("normalize_msgtype", "deserialize_cdr", "decode", "_stream", "feed", "compute", "_publish")


# ------------------------------------------------------------------------------------------- helpers
def median(values: list[float]) -> float:
    return statistics.median(values)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def cpu_seconds() -> float:
    """user + sys of this process and of its children that have been waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def md_table(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def machine() -> dict:
    model = ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    except OSError:
        pass
    packages = {}
    for name in ("rosbags", "ray", "mediapipe", "numpy"):
        try:
            packages[name] = version(name)
        except Exception:  # noqa: BLE001 - not installed
            packages[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": model or platform.machine(),
            "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), **packages}


def burn(n: int) -> float:
    """Pure-Python CPU work; returns its own wall time."""
    started = time.perf_counter()
    total = 0
    for i in range(n):
        total += i * i
    return time.perf_counter() - started


def core_check(repeats: int = 3, n: int = 2_000_000) -> dict:
    """How many of the cores this process can use right now: the same CPU-bound work alone, then twice at
    once in two processes; ``usable_cores`` = 2 x alone / together (2.0 on idle cores, ~1 when shared)."""
    alone, together = [], []
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(burn, [1000, 1000]))  # start the workers
        for _ in range(repeats):
            alone.append(burn(n))
            together.append(timed(lambda: list(pool.map(burn, [n, n])))[0])
    return {"alone_s": round(median(alone), 3), "two_at_once_s": round(median(together), 3),
            "usable_cores": round(2 * median(alone) / median(together), 2), "loadavg": loadavg()}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ----------------------------------------------------------------------------------------------- bags
def make_bag(out: Path, storage: str = "mcap", *, seed: int | None = None, duration: float | None = None,
             camera: bool = False) -> dict:
    scenario = load_scenario(SCENARIO).with_overrides(seed=seed, duration_s=duration, camera=camera)
    elapsed, result = timed(lambda: simulate(scenario, out, storage, progress=False))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"bag": out.name, "path": str(out), "storage": storage, "seed": scenario.seed,
            "duration_s": result.duration_s, "camera": camera, "messages": sum(result.counts.values()),
            "size_mb": round(size / 1e6, 2), "simulate_s": round(elapsed, 2)}


def eval_options() -> EvalOptions:
    """What ``fatigue-llm evaluate --scenario`` would use (options_from): the scenario's pass criteria."""
    scenario = load_scenario(SCENARIO)
    criteria = {c.metric: {k: v for k, v in (("min", c.min), ("max", c.max)) if v is not None}
                for c in scenario.pass_criteria}
    return EvalOptions(criteria=criteria, scenario_name=scenario.name)


# --------------------------------------------------------------------------------------- 1. real time
def bench_realtime(drive: dict, camera: dict, options: EvalOptions, repeats: int, tmp: Path) -> list[dict]:
    from fatigue_llm.evaluation.report import write_report

    rows = []
    path = Path(drive["path"])
    first_trace, _ = timed(lambda: offline_trace(path, options))
    first_eval, _ = timed(lambda: evaluate([str(path)], tmp / "rt_warmup", options, show_progress=False))
    traces, evals, metric_s, report_s, passed = [], [], [], [], None
    for i in range(repeats):
        t, trace = timed(lambda: offline_trace(path, options))
        traces.append(t)
        t, metrics = timed(lambda trace=trace: compute_metrics(trace, options.tolerance_s))
        metric_s.append(t)
        conditions = check_criteria(metrics, options.criteria)
        t, _ = timed(lambda trace=trace, metrics=metrics, conditions=conditions, i=i: write_report(
            tmp / f"rt_report_{i}.html", [trace], metrics, conditions, "bench"))
        report_s.append(t)
        t, passed = timed(lambda i=i: evaluate([str(path)], tmp / f"rt_eval_{i}", options, show_progress=False))
        evals.append(t)
    duration = drive["duration_s"]
    for what, times, first in (("offline_trace", traces, first_trace), ("evaluate (all outputs)", evals, first_eval)):
        rows.append({"drive": f"{duration:g} s observations", "what": what, "median_s": round(median(times), 3),
                     "first_s": round(first, 3), "x_real_time": round(duration / median(times), 1),
                     "target_x": TARGET_X, "meets_target": duration / median(times) >= TARGET_X,
                     "times_s": [round(t, 3) for t in times]})
    rows.append({"drive": f"{duration:g} s observations", "what": "  of which compute_metrics",
                 "median_s": round(median(metric_s), 3), "times_s": [round(t, 3) for t in metric_s]})
    rows.append({"drive": f"{duration:g} s observations", "what": "  of which write_report",
                 "median_s": round(median(report_s), 3), "times_s": [round(t, 3) for t in report_s]})
    rows[1]["passed"] = passed

    cam = Path(camera["path"])
    first_cam, trace = timed(lambda: offline_trace(cam, options))
    cams, perception = [], []
    for _ in range(repeats):
        t, trace = timed(lambda: offline_trace(cam, options))
        cams.append(t)
        perception += trace.stage_latency_ms.get("perception_ms", [])
    cduration = camera["duration_s"]
    rows.append({"drive": f"{cduration:g} s camera (MediaPipe)", "what": "offline_trace",
                 "median_s": round(median(cams), 3), "first_s": round(first_cam, 3),
                 "x_real_time": round(cduration / median(cams), 1),
                 "perception_ms_p50": round(median(perception), 2) if perception else None,
                 "times_s": [round(t, 3) for t in cams]})
    return rows


# ---------------------------------------------------------------------------------------- 2. bag reads
def read_ours(path: Path, decode: bool) -> tuple[int, int]:
    count = size = 0
    with open_bag(path) as reader:
        for message in reader.messages():
            count += 1
            size += len(message.raw)
            if decode:
                message.decode()
    return count, size


def read_rosbags(path: Path, decode: bool) -> tuple[int, int]:
    from rosbags.highlevel import AnyReader

    from fatigue_llm.bags import DEFAULT_DISTRO, get_typestore

    count = size = 0
    with AnyReader([path], default_typestore=get_typestore(DEFAULT_DISTRO)) as reader:
        for connection, _, raw in reader.messages():
            count += 1
            size += len(raw)
            if decode:
                reader.deserialize(raw, connection.msgtype)
    return count, size


def first_ours(path: Path) -> None:
    with open_bag(path) as reader:
        next(reader.messages()).decode()


def first_rosbags(path: Path) -> None:
    from rosbags.highlevel import AnyReader

    from fatigue_llm.bags import DEFAULT_DISTRO, get_typestore

    with AnyReader([path], default_typestore=get_typestore(DEFAULT_DISTRO)) as reader:
        connection, _, raw = next(reader.messages())
        reader.deserialize(raw, connection.msgtype)


def bench_reads(bags: list[dict], repeats: int) -> list[dict]:
    rows = []
    readers = {"ours": read_ours, "rosbags": read_rosbags}
    firsts = {"ours": first_ours, "rosbags": first_rosbags}
    for bag in bags:
        path = Path(bag["path"])
        first: dict[str, list[float]] = {name: [] for name in firsts}
        for _ in range(repeats):
            for name, fn in firsts.items():
                first[name].append(timed(lambda fn=fn, path=path: fn(path))[0])
        for decode in (False, True):
            times: dict[str, list[float]] = {name: [] for name in readers}
            seen: dict[str, tuple[int, int]] = {}
            for name, fn in readers.items():  # warm-up (imports, page cache, typestore cache)
                seen[name] = fn(path, decode)
            for _ in range(repeats):
                for name, fn in readers.items():
                    t, _ = timed(lambda fn=fn, path=path, decode=decode: fn(path, decode))
                    times[name].append(t)
            count, size = seen["ours"]
            rates = {}
            for name in readers:
                t = median(times[name])
                rates[name] = count / t
                rows.append({"bag": bag["label"], "reader": name,
                             "api": ("decode()" if name == "ours" else "deserialize") if decode else "raw",
                             "msgs": count, "median_s": round(t, 4),
                             "first_msg_ms": round(1e3 * median(first[name]), 1) if decode else None,
                             "msgs_per_s": round(count / t),
                             "MB_per_s": round(size / 1e6 / t, 1), "same_messages": seen[name] == seen["ours"],
                             "times_s": [round(x, 4) for x in times[name]]})
            rows[-2]["ours/rosbags"] = round(rates["ours"] / rates["rosbags"], 2)
    return rows


# ------------------------------------------------------------------------------------------- profile
def profile_trace(path: Path, options: EvalOptions, top: int = 12) -> dict:
    profiler = cProfile.Profile()
    profiler.enable()
    offline_trace(path, options)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # by tottime

    def line(key: tuple, value: tuple) -> str:
        (file, lineno, func), (_, calls, tottime, cumtime, _) = key, value
        where = file.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        return f"{calls:>8} {tottime:7.3f} {cumtime:7.3f} {100 * cumtime / total:5.1f}%  {where}:{lineno}({func})"

    watched = {}
    for key, value in stats.stats.items():
        file, _, func = key
        if func in WATCH and ("fatigue_llm" in file or "rosbags" in file):
            name = f"{Path(file).stem}.{func}"
            watched[name] = line(key, value)
    return {"total_s": round(total, 3), "header": "   calls tottime cumtime  cum%  function",
            "top_tottime": [line(k, v) for k, v in entries[:top]],
            "watched": dict(sorted(watched.items()))}


# --------------------------------------------------------------------------------------------- 3. fleet
def normalise(metrics: Any, out_dir: str) -> Any:
    """metrics.json without timing fields, output paths relative to the run's folder."""
    if isinstance(metrics, dict):
        return {k: (os.path.relpath(v, out_dir) if k == "out" and isinstance(v, str) else normalise(v, out_dir))
                for k, v in metrics.items() if k not in TIMING_KEYS}
    if isinstance(metrics, list):
        return [normalise(v, out_dir) for v in metrics]
    return metrics


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [where or "."]


def ray_init() -> float:
    import ray

    elapsed, _ = timed(lambda: ray.init(include_dashboard=False, log_to_driver=False,
                                        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}}))
    return elapsed


def bench_fleet(folder: Path, n_bags: int, duration: float, options: EvalOptions, repeats: int, use_ray: bool,
                tmp: Path) -> dict:
    variants: dict[str, dict[str, Any]] = {"workers=1": {"workers": 1}, "workers=2": {"workers": 2}}
    if use_ray:
        variants["ray cold (init+shutdown inside)"] = {"ray_address": "local"}
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, list[str]] = {name: [] for name in variants}
    run = 0
    for _ in range(repeats):
        for name, kwargs in variants.items():
            out = tmp / f"fleet_run_{run}"
            run += 1
            cpu0 = cpu_seconds()
            t, _ = timed(lambda out=out, kwargs=kwargs: evaluate([str(folder)], out, options, show_progress=False,
                                                                 **kwargs))
            times[name].append(t)
            if "ray_address" not in kwargs:  # Ray's workers are the raylet's children: not counted here
                cpus[name].append(cpu_seconds() - cpu0)
            outputs[name].append(str(out))
    ray_parts = {}
    if use_ray:
        import ray

        name = "ray warm (running Ray)"
        times[name], outputs[name] = [], []
        ray_parts["init_s"] = round(ray_init(), 3)
        try:  # the first run on a fresh Ray also pays the workers' imports (fatigue_llm, matplotlib)
            out = tmp / f"fleet_run_{run}"
            run += 1
            ray_parts["first_run_s"] = round(timed(lambda out=out: evaluate(
                [str(folder)], out, options, show_progress=False, ray_address="local"))[0], 3)
            outputs[name].append(str(out))
            for _ in range(repeats):
                out = tmp / f"fleet_run_{run}"
                run += 1
                t, _ = timed(lambda out=out: evaluate([str(folder)], out, options, show_progress=False,
                                                      ray_address="local"))
                times[name].append(t)
                outputs[name].append(str(out))
        finally:
            ray_parts["shutdown_s"] = round(timed(ray.shutdown)[0], 3)

    reference_dir = outputs["workers=1"][0]
    reference = normalise(json.loads((Path(reference_dir) / METRICS).read_text()), reference_dir)
    rows, equal_all = [], True
    serial = median(times["workers=1"])
    for name, values in times.items():  # the warm run's outputs include its first (untimed) run
        diffs: list[str] = []
        for out in outputs[name]:
            merged = normalise(json.loads((Path(out) / METRICS).read_text()), out)
            diffs += differences(reference, merged)
        equal_all &= not diffs
        t = median(values)
        row = {"run": name, "median_s": round(t, 2), "speedup_vs_workers=1": round(serial / t, 2),
               "bag_x_real_time": round(n_bags * duration / t, 1),
               "cpu_s": round(median(cpus[name]), 2) if cpus.get(name) else None,
               "cpu/wall": round(median(cpus[name]) / t, 2) if cpus.get(name) else None,
               "metrics_equal": not diffs, "times_s": [round(x, 2) for x in values]}
        if diffs:
            row["differences"] = sorted(set(diffs))[:20]
        rows.append(row)
    return {"bags": n_bags, "bag_duration_s": duration, "rows": rows, "ray": ray_parts,
            "merged_metrics_equal": equal_all,
            "compared": "fleet metrics.json minus " + ", ".join(sorted(TIMING_KEYS)) + "; bag out paths relative"}


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 60 s drives, 5 s camera")
    parser.add_argument("--repeats", type=int, help="timed repeats (default 3, --quick 1)")
    parser.add_argument("--read-repeats", type=int, help="bag read passes per reader (default 5, --quick 2)")
    parser.add_argument("--duration", type=float, help="observation-level drive in s (default 600, --quick 60)")
    parser.add_argument("--camera-duration", type=float, help="camera drive in s (default 20, --quick 5)")
    parser.add_argument("--fleet", type=int, default=4, help="bags in the fleet (default 4)")
    parser.add_argument("--no-ray", dest="ray", action="store_false", help="skip the Ray runs")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the cProfile run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output (default %(default)s)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    read_repeats = args.read_repeats or (2 if args.quick else 5)
    duration = args.duration or (60.0 if args.quick else 600.0)
    camera_duration = args.camera_duration or (5.0 if args.quick else 20.0)
    options = eval_options()
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "replay evaluation", "quick": args.quick, "repeats": repeats,
                              "read_repeats": read_repeats, "scenario": str(SCENARIO.relative_to(ROOT)),
                              "machine": machine(), "loadavg_start": loadavg()}

    with tempfile.TemporaryDirectory(prefix="bench_replay_") as folder:
        tmp = Path(folder)
        print(f"simulating bags under {tmp} ...", file=sys.stderr, flush=True)
        drive = {**make_bag(tmp / "drive_mcap", duration=duration), "label": f"{duration:g} s obs, mcap"}
        drive_sql = {**make_bag(tmp / "drive_sqlite3", "sqlite3", duration=duration),
                     "label": f"{duration:g} s obs, sqlite3"}
        camera = {**make_bag(tmp / "camera_mcap", duration=camera_duration, camera=True),
                  "label": f"{camera_duration:g} s camera, mcap"}
        fleet_dir = tmp / "fleet"
        fleet_dir.mkdir()
        base_seed = load_scenario(SCENARIO).seed
        fleet = [make_bag(fleet_dir / f"seed{base_seed + i}", seed=base_seed + i, duration=duration)
                 for i in range(args.fleet)]
        result["bags"] = [drive, drive_sql, camera, *fleet]
        print(md_table(result["bags"], ["bag", "storage", "seed", "duration_s", "camera", "messages", "size_mb",
                                        "simulate_s"]), end="\n\n", flush=True)

        print("1. offline evaluation vs real time ...", file=sys.stderr, flush=True)
        result["realtime"] = bench_realtime(drive, camera, options, repeats, tmp)
        print(md_table(result["realtime"], ["drive", "what", "median_s", "first_s", "x_real_time", "meets_target",
                                            "perception_ms_p50", "passed"]), end="\n\n", flush=True)

        print("2. bag read throughput ...", file=sys.stderr, flush=True)
        result["reads"] = bench_reads([drive, drive_sql, camera], read_repeats)
        print(md_table(result["reads"], ["bag", "reader", "api", "msgs", "median_s", "msgs_per_s", "MB_per_s",
                                         "first_msg_ms", "ours/rosbags", "same_messages"]), end="\n\n", flush=True)

        if args.profile:
            result["profile_offline_trace"] = profile_trace(Path(drive["path"]), options)
            prof = result["profile_offline_trace"]
            print(f"cProfile of offline_trace ({duration:g} s drive, {prof['total_s']} s under the profiler):\n"
                  + "\n".join([prof["header"], *prof["top_tottime"][:8], "watched:", *prof["watched"].values()]),
                  end="\n\n", flush=True)

        print(f"3. fleet of {args.fleet} bags ...", file=sys.stderr, flush=True)
        result["core_check_before_fleet"] = core_check()
        result["fleet"] = bench_fleet(fleet_dir, args.fleet, duration, options, repeats, args.ray, tmp)
        result["core_check_after_fleet"] = core_check()
        fl = result["fleet"]
        print(md_table(fl["rows"], ["run", "median_s", "speedup_vs_workers=1", "bag_x_real_time", "cpu_s",
                                    "cpu/wall", "metrics_equal"]))
        if fl["ray"]:
            print(f"ray.init {fl['ray']['init_s']} s, first run on the fresh Ray (worker imports) "
                  f"{fl['ray']['first_run_s']} s, ray.shutdown {fl['ray']['shutdown_s']} s (timed apart from "
                  "'ray warm'; 'ray cold' includes all three)")
        for when in ("before", "after"):
            check = result[f"core_check_{when}_fleet"]
            print(f"usable cores {when} the fleet runs: {check['usable_cores']} (same pure-Python work alone "
                  f"{check['alone_s']} s, two at once {check['two_at_once_s']} s; load {check['loadavg']})")
        print(f"merged metrics.json equal across all runs: {fl['merged_metrics_equal']} ({fl['compared']})",
              end="\n\n", flush=True)

    result["loadavg_end"] = loadavg()
    result["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
    write_json_atomic(args.out, result)
    print(f"\nwrote {args.out} ({result['total_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
