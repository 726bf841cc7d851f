"""``fatigue-llm evaluate BAG... --scenario S.yaml --out DIR``: replay bags and judge what the system did.

One bag: ``DIR/results.jsonl`` (a condition line, one line per feature window, a verdict line),
``DIR/metrics.json`` and ``DIR/report.html``. Several bags (or a folder of bags): one sub-folder per bag with
the same three files, and the fleet's merged ``metrics.json`` / ``report.html`` / ``results.jsonl`` (verdict)
in ``DIR``. Bags run in parallel with ``--workers N`` (processes) or on a Ray cluster with ``--ray ADDRESS``
(``auto``, ``ray://host:10001``, or ``local`` for a fresh local one); the merged metrics are recomputed
from the pooled records, so they do not depend on where or in which order the bags ran.

Offline (default) feeds each bag through the core code of the nodes (``replay.py``); ``--live`` plays it into
the running node set over DDS and records what the nodes publish (``live.py``).

Exit status: 0 when every pass criterion holds, 1 when one fails, 2 for bad input (the message names the
file and the problem).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fatigue_llm.config import ConfigError, config_from_mapping, read_parameter_file
from fatigue_llm.evaluation.replay import Advisor

RESULTS, METRICS, REPORT = "results.jsonl", "metrics.json", "report.html"


@dataclass(frozen=True)
class EvalOptions:
    """Everything one bag's evaluation needs; plain data, so it travels to worker processes and Ray tasks."""

    criteria: dict[str, dict[str, Any]] = field(default_factory=dict)
    scenario_name: str = ""
    params_file: str = ""
    labels_csv: str = ""
    events_csv: str = ""
    tolerance_s: float = 300.0
    live: bool = False
    live_rate: float = 1.0
    llm: bool = False           # also run the advice path (offline: the llm node's engine in line; live: the node)


@dataclass(frozen=True)
class BagOutcome:
    """What one bag's evaluation returns to the fleet: its trace (for merging) and its verdict."""

    bag: str
    out_dir: str
    trace: Any
    passed: bool


def replay_config(params_file: str):
    """The node parameters for the replay: the vehicle.yaml a launch would use (or the one given)."""
    from fatigue_llm.evaluation.replay import ReplayConfig
    from fatigue_llm.features.config import FeatureConfig
    from fatigue_llm.intervention.config import InterventionConfig
    from fatigue_llm.perception.config import PerceptionConfig
    from fatigue_llm.ros.launcher import default_params_file

    path = Path(params_file) if params_file else default_params_file()
    sections = {}
    for node, cls in (("perception", PerceptionConfig), ("feature_processor", FeatureConfig),
                      ("intervention", InterventionConfig)):
        values = read_parameter_file(path, node)
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        config = config_from_mapping(cls, known, source=f"{path} ({node})")
        config.validate()
        sections[node] = config
    return ReplayConfig(features=sections["feature_processor"], intervention=sections["intervention"],
                        perception=sections["perception"], image_topic=sections["perception"].image_topic)


def offline_trace(bag: Path, options: EvalOptions):
    """Read ``bag`` and replay it; a partially readable bag is replayed as far as it goes."""
    from fatigue_llm.bags import open_bag
    from fatigue_llm.evaluation.replay import Replay, ReplayError, read_labels, replay_topics

    labels = read_labels(options.labels_csv or None, options.events_csv or None)
    config = replay_config(options.params_file)
    with open_bag(bag) as reader:
        usable = {topic.lstrip("/") for topic in reader.topics} & set(replay_topics(config))
        if not usable:  # before any model loads
            raise ReplayError(f"{bag}: none of the topics the system reads ({', '.join(replay_topics(config))}); "
                              f"the bag has {', '.join(sorted(reader.topics)) or 'no topics'}")
        with llm_advisor(options, config) as advisor:
            return _replay_bag(reader, Replay(bag.name, config, labels, advisor))


def _replay_bag(reader, replay):
    for message in reader.messages():
        replay.feed(message.topic, message.stamp_ns, message.decode())
    return replay.trace(reader.stopped_at)


@contextlib.contextmanager
def llm_advisor(options: EvalOptions, config) -> Iterator[Advisor | None]:
    """The advice path for ``--llm``: the engine the llm node builds from the params file's ``llm`` section,
    in a scratch state folder (its case store starts as the node's does and is thrown away)."""
    if not options.llm:
        yield None
        return
    from fatigue_llm.evaluation.replay import Advice
    from fatigue_llm.intervention.engine import InterventionEngine
    from fatigue_llm.llm.config import LlmConfig
    from fatigue_llm.ros.launcher import default_params_file

    path = Path(options.params_file) if options.params_file else default_params_file()
    llm = config_from_mapping(LlmConfig, read_parameter_file(path, "llm"), source=f"{path} (llm)")
    llm.validate()
    min_level = config.intervention.llm_min_level

    with tempfile.TemporaryDirectory(prefix="fatigue-replay-llm-") as state:
        engine = InterventionEngine(llm, state_dir=Path(state))
        engine.load()

        def advise(features, decision) -> Advice | None:
            if decision.level < min_level:
                return None
            began = time.perf_counter()
            follow_up = engine.advise(features, decision)
            generation = getattr(engine, "last_generation", None)
            return Advice(int(follow_up.level), follow_up.action, str(follow_up.source), time.perf_counter() - began,
                          generation.decode_tokens_per_s if generation is not None else 0.0)

        try:
            yield advise
        finally:
            engine.close()


def evaluate_bag(bag: str, out_dir: str, options: EvalOptions) -> BagOutcome:
    """One bag -> its three output files; returns the trace for the fleet merge."""
    from fatigue_llm.evaluation.criteria import check_criteria, verdict
    from fatigue_llm.evaluation.metrics import compute_metrics
    from fatigue_llm.evaluation.report import write_report
    from fatigue_llm.evaluation.results import write_json_atomic, write_results_jsonl

    path = Path(bag)
    if options.live:
        from fatigue_llm.evaluation.live import live_trace

        trace = live_trace(path, options, llm=options.llm or None)  # --llm: the llm node runs too
    else:
        trace = offline_trace(path, options)
    metrics = compute_metrics(trace, options.tolerance_s)
    conditions = check_criteria(metrics, options.criteria)
    passed = verdict(conditions)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_results_jsonl(out / RESULTS, trace, conditions, passed)
    write_json_atomic(out / METRICS, {**metrics, "passed": passed, "bag": str(path), "mode": _mode(options),
                                      "scenario": options.scenario_name})
    title = f"{options.scenario_name or 'replay'}: {path.name}"
    write_report(out / REPORT, [trace], metrics, conditions, title)
    return BagOutcome(str(path), str(out), trace, passed)


def _mode(options: EvalOptions) -> str:
    return "live" if options.live else "offline"


# ------------------------------------------------------------------------------ bags and the fleet
def is_bag(path: Path) -> bool:
    if path.is_file():
        return path.suffix in (".mcap", ".db3")
    return (path / "metadata.yaml").is_file() or any(path.glob("*.mcap")) or any(path.glob("*.db3"))


def find_bags(paths: Sequence[str]) -> list[Path]:
    """The bags named: a bag folder or file is itself; another folder holds bags (one level down)."""
    bags: list[Path] = []
    for name in paths:
        path = Path(name)
        if not path.exists():
            raise ConfigError(f"{path}: no such bag or folder")
        if is_bag(path):
            bags.append(path)
            continue
        inside = sorted(p for p in path.iterdir() if is_bag(p)) if path.is_dir() else []
        if not inside:
            raise ConfigError(f"{path}: not a bag (no metadata.yaml, .mcap or .db3) and holds no bags")
        bags.extend(inside)
    names = [b.name for b in bags]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"bags with the same name would share an output folder: {', '.join(duplicates)}")
    return bags


def run_serial(jobs: list[tuple[str, str]], options: EvalOptions, progress: Callable[[], None]) -> list[BagOutcome]:
    outcomes = []
    for bag, out in jobs:
        outcomes.append(evaluate_bag(bag, out, options))
        progress()
    return outcomes


def run_processes(jobs: list[tuple[str, str]], options: EvalOptions, workers: int,
                  progress: Callable[[], None]) -> list[BagOutcome]:
    outcomes = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(evaluate_bag, bag, out, options) for bag, out in jobs]
        for future in as_completed(futures):
            outcomes.append(future.result())
            progress()
    return outcomes


def run_ray(jobs: list[tuple[str, str]], options: EvalOptions, address: str,
            progress: Callable[[], None]) -> list[BagOutcome]:
    """The same per-bag work as Ray tasks on an existing cluster (``address``) or a local one (``local``)."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        task = ray.remote(num_cpus=1)(evaluate_bag)
        pending = [task.remote(bag, out, options) for bag, out in jobs]
        outcomes = []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            outcomes.extend(ray.get(done))
            progress()
        return outcomes
    finally:
        if started_here:
            ray.shutdown()


def write_fleet(out: Path, outcomes: list[BagOutcome], options: EvalOptions) -> bool:
    """Merged metrics, the fleet verdict (criteria on the pooled metrics) and the fleet report."""
    from fatigue_llm.evaluation.criteria import check_criteria, verdict
    from fatigue_llm.evaluation.metrics import merge_metrics
    from fatigue_llm.evaluation.report import write_report
    from fatigue_llm.evaluation.results import dumps_line, write_json_atomic, write_text_atomic

    traces = [o.trace for o in outcomes]
    metrics = merge_metrics(traces, options.tolerance_s)
    conditions = check_criteria(metrics, options.criteria)
    passed = verdict(conditions) and all(o.passed for o in outcomes)
    bags = sorted(({"bag": o.bag, "out": o.out_dir, "passed": o.passed} for o in outcomes), key=lambda b: b["bag"])
    write_json_atomic(out / METRICS, {**metrics, "passed": passed, "bags": bags, "mode": _mode(options),
                                      "scenario": options.scenario_name})
    lines = [{"type": "condition", "trace": "fleet", "criteria": [
                {"metric": c.metric, "op": c.op, "threshold": c.threshold} for c in conditions]},
             {"type": "verdict", "trace": "fleet", "passed": passed, "bags": bags,
              "conditions": [c.to_json_dict() for c in conditions], "stopped_at": None}]
    write_text_atomic(out / RESULTS, "".join(dumps_line(line) + "\n" for line in lines))
    write_report(out / REPORT, sorted(traces, key=lambda t: t.name), metrics, conditions,
                 f"{options.scenario_name or 'replay'}: {len(traces)} bags")
    return passed


def evaluate(paths: Sequence[str], out: Path, options: EvalOptions, workers: int = 1, ray_address: str = "",
             show_progress: bool = True) -> bool:
    """Evaluate the bags in ``paths`` into ``out``; True when every criterion passed."""
    from tqdm import tqdm

    bags = find_bags(paths)
    out.mkdir(parents=True, exist_ok=True)
    single = len(bags) == 1
    jobs = [(str(bag), str(out if single else out / bag.name)) for bag in bags]
    with tqdm(total=len(jobs), unit="bag", desc="evaluate", disable=not show_progress or single,
              file=sys.stderr) as bar:
        if ray_address:
            outcomes = run_ray(jobs, options, ray_address, bar.update)
        elif workers > 1 and not single and not options.live:  # live bags share one DDS graph: one at a time
            outcomes = run_processes(jobs, options, workers, bar.update)
        else:
            outcomes = run_serial(jobs, options, bar.update)
    if single:
        return outcomes[0].passed
    return write_fleet(out, outcomes, options)


# ------------------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fatigue-llm evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("bags", nargs="+", help="bag folders / .mcap / .db3 files, or folders holding bags")
    parser.add_argument("--scenario", help="scenario YAML whose pass_criteria judge the run")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--live", action="store_true", help="play the bag into the running nodes (DDS)")
    parser.add_argument("--rate", type=float, default=1.0, help="--live playback rate (default 1)")
    parser.add_argument("--llm", action="store_true",
                        help="also run the advice path: offline, the llm node's engine on each alert; --live, the "
                             "llm node (off by default in live runs)")
    parser.add_argument("--params", default="", help="ROS 2 parameter file (default: config/vehicle.yaml)")
    parser.add_argument("--labels", default="", help="CSV start_s,end_s,level for bags without truth/fatigue")
    parser.add_argument("--events", default="", help="CSV start_s,end_s,event (blink/microsleep/yawn/nod)")
    parser.add_argument("--tolerance", type=float, default=300.0,
                        help="s around a drowsy label within which an intervention is not false (default 300)")
    parser.add_argument("--workers", type=int, default=1, help="bags evaluated in parallel processes")
    parser.add_argument("--ray", default="", metavar="ADDRESS",
                        help="run the bags as Ray tasks: a cluster address, 'auto', or 'local'")
    return parser


def options_from(args: argparse.Namespace) -> EvalOptions:
    from fatigue_llm.evaluation.criteria import validate_criteria

    criteria: dict[str, dict[str, Any]] = {}
    name = ""
    if args.scenario:
        from fatigue_llm.sim.scenario import load_scenario

        scenario = load_scenario(args.scenario)
        name = scenario.name
        criteria = {c.metric: {k: v for k, v in (("min", c.min), ("max", c.max)) if v is not None}
                    for c in scenario.pass_criteria}
        try:
            validate_criteria(criteria)
        except ValueError as error:
            raise ConfigError(f"{args.scenario}: pass_criteria: {error}") from None
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.rate <= 0:
        raise ConfigError(f"--rate must be > 0, got {args.rate}")
    for flag, value in (("--labels", args.labels), ("--events", args.events), ("--params", args.params)):
        if value and not Path(value).is_file():
            raise ConfigError(f"{flag} {value}: no such file")
    return EvalOptions(criteria=criteria, scenario_name=name, params_file=args.params, labels_csv=args.labels,
                       events_csv=args.events, tolerance_s=args.tolerance, live=args.live, live_rate=args.rate,
                       llm=args.llm)


def main(argv: Sequence[str] | None = None) -> int:
    from fatigue_llm.bags import BagError
    from fatigue_llm.evaluation.replay import ReplayError

    args = _parser().parse_args(argv)
    try:
        options = options_from(args)
        passed = evaluate(args.bags, args.out, options, args.workers, args.ray)
    except (ConfigError, BagError, ReplayError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{'PASSED' if passed else 'FAILED'}: {args.out / REPORT}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
