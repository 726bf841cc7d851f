"""``fatigue-llm evaluate BAG --live``: play a bag into the real vehicle node set over DDS and record what it does.

1. The node set of ``fatigue-llm launch vehicle`` (perception, feature_processor, intervention) starts in its own
   processes with a temporary copy of the parameter file: every node on ``use_sim_time`` (the player publishes the
   bag time on /clock, so the feature node's timer ticks in bag time and the intervention node stamps its alerts in
   bag time) and, unless asked otherwise, ``llm_enabled: false`` for the intervention node (the rule path only, no
   model to load; ``FATIGUE_LLM_LIVE_LLM=1`` or ``live_trace(..., llm=True)`` keeps the file's value and starts
   the llm node too). Perception listens to the bag's camera topic (``image_topic``); an observation-level bag
   (``driver/observation``) feeds the feature node directly.
2. Once every node's subscriptions are in the graph, the bag plays as ``fatigue-llm bag play BAG --rate R --clock``
   does (its publishers and timing, from this process, starting only when every subscriber matched), the topics
   the system reads; this process records ``fatigue/features``, ``intervention`` and ``driver/observation``
   (reliable) with their receive times. The bag's end time goes out on /clock last, so the last period's window
   is published as the offline replay publishes it.
3. After the player ends and the graph is quiet, the nodes are stopped (SIGINT, as ``launch`` does) and the
   records become a ``Trace``, with the truth read from the bag's ``truth/fatigue`` (or sidecar labels) as the
   offline replay does. Times are seconds since the bag's first message.

Node set, player and this process share one ROS_DOMAIN_ID: the caller's, or a random one in 100..200 (then set in
this process's environment, so the bags of one fleet run share it). ``FATIGUE_LLM_LIVE_VERBOSE=1`` echoes the
nodes' output to stderr; otherwise its last lines come with any error.

Stage latencies (wall ms, as received here): ``observation_to_features_ms`` for event-triggered features (a
microsleep: the observation that raised it to the features it caused) and ``live_feature_to_intervention_ms`` (the
features to the rule Intervention they caused).
"""

from __future__ import annotations

import math
import os
import random
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fatigue_llm import topics
from fatigue_llm.evaluation.replay import (
    BLINK_EVENTS,
    TRUTH_TOPIC,
    WINDOW_FEATURES,
    Labels,
    Replay,
    ReplayConfig,
    ReplayError,
    _Truth,
    read_labels,
    stamp_s,
)
from fatigue_llm.evaluation.types import FrameRecord, Interval, InterventionRecord, Trace, WindowRecord
from fatigue_llm.perception.types import EventType, FrameObservation

LLM_ENV = "FATIGUE_LLM_LIVE_LLM"       # "1": keep the parameter file's llm_enabled and start the llm node
READY_TIMEOUT_S = 90.0                 # node processes importing rclpy + MediaPipe on a loaded machine
DRAIN_QUIET_S = 0.5                    # after the player: no new message for this long ...
DRAIN_MAX_S = 5.0                      # ... or at most this long
CLOCK_HZ = 50.0                        # /clock rate of the player (wall Hz)
STAMP_SLACK_S = 60.0                   # an Intervention stamp this far outside the bag is not bag time
LOG_LINES = 60                         # node output kept for error messages


class LiveError(ReplayError):
    """The live run could not be done (a node did not come up, the player failed); the message says why."""


# ------------------------------------------------------------------------------ the node set's inputs
@dataclass(frozen=True)
class BagPlan:
    """What the live run needs to know about the bag before playing it."""

    start_ns: int
    end_ns: int
    play_topics: tuple[str, ...]       # the bag's names of the topics the node set reads
    image_topic: str                   # the camera topic perception subscribes to ("" for observation bags)
    truth: list[tuple[int, Any]] = field(default_factory=list)  # (header stamp ns, FatigueTruth)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def plan_bag(bag: Path, config: ReplayConfig) -> BagPlan:
    """Read the bag's index and its truth; which topics to play and the camera topic to give perception."""
    from fatigue_llm.bags import open_bag

    with open_bag(bag) as reader:
        by_relative = {name.lstrip("/"): name for name in reader.topics}
        image_topic = ""
        configured = config.image_topic.lstrip("/")
        images = [name for name, info in reader.topics.items() if info.msgtype == "sensor_msgs/msg/Image"]
        if configured in by_relative:
            image_topic = by_relative[configured]
        elif len(images) == 1:  # a camera recorded under another name: point perception at it
            image_topic = images[0]
        play = [by_relative[t] for t in (topics.DRIVER_OBSERVATION, topics.VEHICLE_SIGNALS) if t in by_relative]
        if image_topic:
            play.append(image_topic)
        if not play:
            raise ReplayError(f"{bag}: none of the topics the system reads ({config.image_topic}, "
                              f"{topics.DRIVER_OBSERVATION}, {topics.VEHICLE_SIGNALS}); the bag has "
                              f"{', '.join(sorted(reader.topics)) or 'no topics'}")
        truth: list[tuple[int, Any]] = []
        if TRUTH_TOPIC in by_relative:
            for message in reader.messages([by_relative[TRUTH_TOPIC]]):
                msg = message.decode()
                truth.append((round(stamp_s(msg.header) * 1e9), msg))
        return BagPlan(reader.start_ns, reader.end_ns, tuple(play), image_topic, truth)


def live_params(source: Path, llm: bool, folder: Path) -> Path:
    """A copy of the parameter file with ``use_sim_time`` for every node (and the LLM off unless ``llm``)."""
    from fatigue_llm.config import ConfigError
    from fatigue_llm.nodeset import VEHICLE_NODES

    try:
        document = yaml.safe_load(source.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{source}: cannot read parameter file ({error})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a mapping of node names to 'ros__parameters'")
    for spec in VEHICLE_NODES:
        section = document.setdefault(f"/**/{spec.name}", {}).setdefault("ros__parameters", {})
        section["use_sim_time"] = True
        if spec.name == "intervention" and not llm:
            section["llm_enabled"] = False
    path = folder / "vehicle.live.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def llm_wanted(llm: bool | None) -> bool:
    if llm is not None:
        return llm
    return os.environ.get(LLM_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def ros_domain(env: dict[str, str]) -> int:
    """The caller's ROS_DOMAIN_ID, or a random one in 100..200 (set in ``env``)."""
    value = env.get("ROS_DOMAIN_ID", "").strip()
    if not value.isdigit():
        value = str(random.randint(100, 200))
        env["ROS_DOMAIN_ID"] = value
    return int(value)


class _Tail:
    """A text stream that keeps the last lines (the Launcher writes the nodes' output here)."""

    def __init__(self, echo: bool = False) -> None:
        self.lines: deque[str] = deque(maxlen=LOG_LINES)
        self.echo = echo
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *whole, self._partial = self._partial.split("\n")
        self.lines.extend(whole)
        if self.echo:
            sys.stderr.write(text)
        return len(text)

    def flush(self) -> None:
        if self.echo:
            sys.stderr.flush()

    def text(self) -> str:
        return "\n".join(self.lines)


# ------------------------------------------------------------------------------ what the nodes publish
@dataclass
class Received:
    """Messages as they arrived: (receive time.monotonic(), message)."""

    features: list[tuple[float, Any]] = field(default_factory=list)
    interventions: list[tuple[float, Any]] = field(default_factory=list)
    observations: list[tuple[float, Any]] = field(default_factory=list)
    last_s: float = 0.0

    def adder(self, into: list[tuple[float, Any]]) -> Callable[[Any], None]:
        def add(msg: Any) -> None:
            now = time.monotonic()
            into.append((now, msg))
            self.last_s = now

        return add


class Listener:
    """This process's node, spinning in a thread of its own context on the run's domain."""

    def __init__(self, domain_id: int) -> None:
        import rclpy
        from fatigue_msgs.msg import DriverObservation, FatigueFeatures, Intervention
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(f"fatigue_llm_evaluate_live_{os.getpid()}", context=self.context)
        self.received = Received()
        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        for msg_type, topic, into in ((FatigueFeatures, topics.FATIGUE_FEATURES, self.received.features),
                                      (Intervention, topics.INTERVENTION, self.received.interventions),
                                      (DriverObservation, topics.DRIVER_OBSERVATION, self.received.observations)):
            self.node.create_subscription(msg_type, topic, self.received.adder(into), reliable)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="evaluate-live", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok() and not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - the context went down under us while closing
                if not self.context.ok():
                    return
                raise

    def _nodes(self, topic: str, kind: str) -> set[str]:
        infos = (self.node.get_subscriptions_info_by_topic if kind == "sub"
                 else self.node.get_publishers_info_by_topic)("/" + topic.lstrip("/"))
        return {info.node_name for info in infos}

    def missing(self, needs: list[tuple[str, str, str]]) -> list[str]:
        """Which of (node, "sub"/"pub", topic) are not in the graph yet, as readable lines."""
        return [f"{node} {'subscribing to' if kind == 'sub' else 'publishing'} {topic}"
                for node, kind, topic in needs if node not in self._nodes(topic, kind)]

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(timeout=2.0)
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def readiness(plan: BagPlan, llm: bool) -> list[tuple[str, str, str]]:
    """The graph entries that mean "the node set is up and will hear the bag"."""
    needs = [("feature_processor", "pub", topics.FATIGUE_FEATURES),
             ("intervention", "sub", topics.FATIGUE_FEATURES),  # only once activated (lifecycle autostart)
             ("intervention", "pub", topics.INTERVENTION)]
    played = {t.lstrip("/") for t in plan.play_topics}
    for topic in (topics.DRIVER_OBSERVATION, topics.VEHICLE_SIGNALS):
        if topic in played:
            needs.append(("feature_processor", "sub", topic))
    if plan.image_topic:
        needs += [("perception", "sub", plan.image_topic), ("feature_processor", "sub", topics.DRIVER_OBSERVATION)]
    if llm:
        needs.append(("llm", "pub", f"/{topics.ADVISE_ACTION}/_action/status"))  # the Advise server is up
    return needs


# ------------------------------------------------------------------------------ the run
def live_trace(bag: Path, options: Any, *, llm: bool | None = None, verbose: bool | None = None) -> Trace:
    """Play ``bag`` into the real node set and return what it published as a ``Trace`` (see the module doc)."""
    from fatigue_llm.evaluation.evaluate import replay_config
    from fatigue_llm.nodeset import VEHICLE_NODES
    from fatigue_llm.ros.environment import apply_local_dds_defaults
    from fatigue_llm.ros.launcher import Launcher, default_params_file

    bag = Path(bag)
    rate = float(getattr(options, "live_rate", 1.0) or 1.0)
    labels = read_labels(options.labels_csv or None, options.events_csv or None)
    config = replay_config(options.params_file)
    plan = plan_bag(bag, config)
    use_llm = llm_wanted(llm)
    echo = verbose if verbose is not None else os.environ.get("FATIGUE_LLM_LIVE_VERBOSE", "") == "1"

    ros_domain(os.environ)  # this process, the nodes and the player: one domain
    apply_local_dds_defaults()
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    domain_id = int(env["ROS_DOMAIN_ID"])
    specs = tuple(s for s in VEHICLE_NODES if use_llm or s.name != "llm")
    tail = _Tail(echo)
    with tempfile.TemporaryDirectory(prefix="fatigue-llm-live-") as folder:
        source = Path(options.params_file) if options.params_file else default_params_file()
        params = live_params(source, use_llm, Path(folder))
        arguments = {"image_topic": plan.image_topic or config.image_topic}  # also: no sample video fallback
        launcher = Launcher("vehicle", params, arguments, out=tail, env=env, specs=specs)
        listener = Listener(domain_id)
        print(f"live: {bag.name} on ROS_DOMAIN_ID={domain_id}, rate {rate:g}, llm {'on' if use_llm else 'off'}",
              file=sys.stderr)
        try:
            launcher.start()
            _wait_ready(launcher, listener, readiness(plan, use_llm), tail)
            played_at = time.monotonic()
            stopped = _play(bag, plan, rate, listener, launcher)
            _drain(listener.received)
            wall_s = time.monotonic() - played_at
        finally:
            code = launcher.stop()
            listener.close()
        if code:
            print(f"live: warning: a node exited with status {code}:\n{tail.text()}", file=sys.stderr)
    received = listener.received
    print(f"live: played {plan.duration_s:.1f} s of bag in {wall_s:.1f} s; received {len(received.features)} "
          f"features, {len(received.interventions)} interventions, {len(received.observations)} observations",
          file=sys.stderr)
    return build_trace(bag.name, plan, received, config, labels, stopped)


def _wait_ready(launcher: Any, listener: Listener, needs: list[tuple[str, str, str]], tail: _Tail) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        launcher.poll()
        dead = [record for record in launcher.exits if not record.respawn]
        if dead:
            raise LiveError(f"{dead[0].describe()} before the bag was played:\n{tail.text()}")
        missing = listener.missing(needs)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise LiveError(f"the node set did not come up within {READY_TIMEOUT_S:.0f} s (missing: "
                            f"{'; '.join(missing)}):\n{tail.text()}")
        time.sleep(0.1)


def _play(bag: Path, plan: BagPlan, rate: float, listener: Listener, launcher: Any) -> str | None:
    """``fatigue-llm bag play BAG --rate R --clock``, from this process's node (the play module's pieces).

    In-process so the start can wait for every subscriber in the graph, this process's own included: a
    player in a process of its own starts once *one* subscriber per topic matched, and what it sends before
    the others match is lost to them (volatile). Returns where a damaged bag stopped (None at its end)."""
    from types import SimpleNamespace

    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock

    from fatigue_llm.bags import open_bag
    from fatigue_llm.bags.play import (
        CLOCK_TOPIC,
        MATCH_SETTLE_S,
        ClockPublisher,
        PlayOptions,
        bag_publishers,
        flush_publishers,
        play_once,
    )

    stop = SimpleNamespace(requested=False)
    with open_bag(bag) as reader:
        publishers = bag_publishers(listener.node, reader, set(plan.play_topics))
        ticker = ClockPublisher(listener.node, CLOCK_HZ)
        wanted = {name: listener.node.count_subscribers("/" + name.lstrip("/")) for name in publishers}
        wanted[CLOCK_TOPIC] = listener.node.count_subscribers(CLOCK_TOPIC)  # every node's TimeSource
        matched = dict(publishers, **{CLOCK_TOPIC: ticker.publisher})
        deadline = time.monotonic() + READY_TIMEOUT_S
        while any(matched[t].get_subscription_count() < n for t, n in wanted.items()):
            if time.monotonic() > deadline:
                late = [t for t, n in wanted.items() if matched[t].get_subscription_count() < n]
                raise LiveError(f"the node set's subscriptions on {', '.join(late)} did not match the player")
            time.sleep(0.02)
        time.sleep(MATCH_SETTLE_S)
        played = 0

        def count() -> None:
            nonlocal played
            played += 1
            if played % 100 == 0:
                launcher.poll()
                if any(not record.respawn for record in launcher.exits):
                    stop.requested = True  # a node died: no point playing on

        play_once(reader, PlayOptions(bag=bag, rate=rate), publishers, ticker, stop, count)
        flush_publishers(publishers)
        if not stop.requested:  # the bag's last moment on /clock, so the last period's window is due too
            seconds, nanos = divmod(plan.end_ns, 1_000_000_000)
            ticker.publisher.publish(Clock(clock=Time(sec=seconds, nanosec=nanos)))
        dead = [r for r in launcher.exits if not r.respawn]
        if dead:
            raise LiveError(f"{dead[0].describe()} while the bag played")
        return reader.stopped_at


def _drain(received: Received) -> None:
    """Wait for what the nodes still publish about the last messages."""
    end = time.monotonic() + DRAIN_MAX_S
    time.sleep(DRAIN_QUIET_S)
    while time.monotonic() < end and time.monotonic() - received.last_s < DRAIN_QUIET_S:
        time.sleep(0.05)


# ------------------------------------------------------------------------------ records -> Trace
def build_trace(name: str, plan: BagPlan, received: Received, config: ReplayConfig,
                labels: Labels | None = None, stopped_at: str | None = None) -> Trace:
    """The ``Trace`` of a live run (pure: no ROS here, so it is testable on recorded messages)."""
    from fatigue_llm.intervention.policy import assess
    from fatigue_llm.ros.convert import msg_to_features

    labels = labels or Labels()
    t0 = plan.start_ns * 1e-9
    duration = plan.duration_s
    truth = _Truth()
    for stamp_ns, msg in plan.truth:
        truth.add(stamp_ns * 1e-9 - t0, msg)
    if truth.times:
        truth_levels = truth.level_periods(duration)
        truth_events = sorted([*truth.runs(truth.blink, "blink"), *truth.runs(truth.microsleep, "microsleep"),
                               *truth.runs(truth.yawn, "yawn"), *truth.runs(truth.nod, "nod")],
                              key=lambda i: (i.start, i.kind))
    else:
        truth_levels, truth_events = list(labels.levels), list(labels.events)

    series: dict[str, tuple[list[float], list[float]]] = {"ear": ([], []), "perclos": ([], []), "sdlp": ([], [])}
    frames, detected, observed_at = _frames(received, truth, t0, series, duration)

    windows: list[WindowRecord] = []
    latency: dict[str, list[float]] = {"observation_to_features_ms": [], "live_feature_to_intervention_ms": []}
    for recv_s, msg in sorted(received.features, key=lambda item: item[0]):
        features = msg_to_features(msg)
        if features.trigger_event:  # the microsleep path: published on the observation that raised it
            seen = observed_at.get(_ns(features.timestamp_s))
            if seen is not None:
                latency["observation_to_features_ms"].append((recv_s - seen) * 1e3)
            continue
        t = features.timestamp_s - t0
        level, _ = assess(features, config.intervention)
        values = {key: float(getattr(features, key)) for key in WINDOW_FEATURES}
        for series_name, key in (("perclos", "eye_closure_ratio"), ("sdlp", "sdlp")):
            series[series_name][0].append(t)
            series[series_name][1].append(values[key])
        windows.append(WindowRecord(t, Replay._truth_level_at(t, truth_levels), int(level),  # noqa: SLF001
                                    _score(int(level), features.eye_closure_ratio, config), values))

    interventions = []
    feature_arrivals = sorted(received.features, key=lambda item: item[0])
    for recv_s, msg in sorted(received.interventions, key=lambda item: item[0]):
        trigger = _latest_before(feature_arrivals, recv_s)
        if trigger is not None and msg.source == "rule":  # a follow-up answers a rule alert, not features
            latency["live_feature_to_intervention_ms"].append((recv_s - trigger[0]) * 1e3)
        stamp = stamp_s(msg.header)
        if plan.start_ns * 1e-9 - STAMP_SLACK_S <= stamp <= plan.end_ns * 1e-9 + STAMP_SLACK_S:
            t = stamp - t0
        elif trigger is not None:  # stamped in wall time (use_sim_time overridden): the features' time
            t = stamp_s(trigger[1].header) - t0
        else:
            continue
        interventions.append(InterventionRecord(t, int(msg.level), str(msg.action), str(msg.source)))
    return Trace(name=name, duration_s=duration, frames=frames, windows=sorted(windows, key=lambda w: w.t),
                 interventions=sorted(interventions, key=lambda i: i.t), truth_events=truth_events,
                 detected_events=sorted(detected, key=lambda i: (i.start, i.kind)), truth_levels=truth_levels,
                 stage_latency_ms={k: v for k, v in latency.items() if v}, stopped_at=stopped_at, series=series)


def _ns(seconds: float) -> int:
    return round(seconds * 1e9) if math.isfinite(seconds) else -1


def _score(level: int, perclos: float, config: ReplayConfig) -> float:
    """As the offline replay scores a window: the level, PERCLOS towards critical breaking ties (ROC)."""
    nudge = min(max(perclos / config.intervention.critical_perclos, 0.0), 1.0) if math.isfinite(perclos) else 0.0
    return level + 0.99 * nudge


def _latest_before(arrivals: list[tuple[float, Any]], when: float) -> tuple[float, Any] | None:
    latest = None
    for recv_s, msg in arrivals:
        if recv_s > when:
            break
        latest = (recv_s, msg)
    return latest


def _frames(received: Received, truth: _Truth, t0: float, series: dict[str, tuple[list[float], list[float]]],
            duration: float) -> tuple[list[FrameRecord], list[Interval], dict[int, float]]:
    """Frame records and detected events from the observations, as the offline replay derives them."""
    from fatigue_llm.ros.convert import msg_to_observation

    frames: list[FrameRecord] = []
    detected: list[Interval] = []
    observed_at: dict[int, float] = {}
    onset: float | None = None
    ordered = []
    for recv_s, msg in received.observations:
        try:
            obs = msg_to_observation(msg)
        except ValueError:  # an unknown event type: the feature node rejects it too
            continue
        ordered.append((obs.timestamp_s, recv_s, obs))
    ordered.sort(key=lambda item: item[0])
    for stamp, recv_s, obs in ordered:
        observed_at.setdefault(_ns(stamp), recv_s)
        t = stamp - t0
        i = truth.index_at(t)
        frames.append(FrameRecord(t, truth.closed[i] if i is not None else None,
                                  bool(obs.face_found and obs.eyes_closed),
                                  truth.blink[i] if i is not None else None, None))
        series["ear"][0].append(t)
        series["ear"][1].append(obs.ear)
        onset = _note_events(obs, t, t0, onset, detected)
    if onset is not None:
        detected.append(Interval(onset, duration, "microsleep"))
    return frames, detected, observed_at


def _note_events(obs: FrameObservation, t: float, t0: float, onset: float | None,
                 detected: list[Interval]) -> float | None:
    for event in obs.events:
        start = event.start_s - t0
        if event.type in BLINK_EVENTS:
            detected.append(Interval(start, start + event.duration_s, "blink"))
        elif event.type == EventType.MICROSLEEP:
            onset = start
        elif event.type in (EventType.YAWN, EventType.NOD):
            detected.append(Interval(start, start + event.duration_s, event.type.name.lower()))
    if onset is not None and obs.face_found and obs.closed_duration_s == 0.0:
        detected.append(Interval(onset, t, "microsleep"))  # eyes open again
        onset = None
    return onset
