"""``fatigue-llm bag record``: raw subscriptions into a bag, stamped with the receive time.

Each topic's type is found in the ROS graph (it is subscribed once a publisher appears) and its
subscription matches the publishers' QoS. SIGINT/SIGTERM, ``--duration`` or ``--count`` stop the
recording; the bag is then closed, complete, and only then appears at its path.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from fatigue_llm.bags.errors import BagError
from fatigue_llm.bags.rosqos import bag_qos, compatible_profile
from fatigue_llm.bags.writer import BagWriter
from fatigue_llm.ros.echo import EchoError, import_message_type

SUBSCRIPTION_DEPTH = 100  # a recorder must not drop a burst while it writes


@dataclass(frozen=True)
class RecordOptions:
    topics: Sequence[str]
    out: str | Path
    storage: str = "mcap"
    distro: str = "kilted"
    duration_s: float | None = None
    count: int | None = None
    overwrite: bool = False


class Stop:
    """Set by SIGINT/SIGTERM: the loop finishes the bag instead of dying in the middle of a write."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Recorder:
    """Subscribes each wanted topic once it has a publisher and writes what arrives."""

    def __init__(self, node: Node, writer: BagWriter, topics: Sequence[str], limit: int | None = None) -> None:
        self.node = node
        self.writer = writer
        self.pending = list(dict.fromkeys(t if t.startswith("/") else "/" + t for t in topics))
        self.failed: list[str] = []
        self.received = 0
        self.limit = limit
        self._subscriptions: list[object] = []

    def discover(self) -> None:
        """Subscribe the pending topics that now have a publisher; a topic whose type cannot be recorded
        is reported and dropped, the others go on (the bag keeps what it has)."""
        names_types = dict(self.node.get_topic_names_and_types())
        for topic in list(self.pending):
            publishers = self.node.get_publishers_info_by_topic(topic)
            if not publishers or not names_types.get(topic):
                continue
            self.pending.remove(topic)
            try:
                self._subscribe(topic, names_types[topic][0], publishers)
            except BagError as error:
                print(f"error: {error}", file=sys.stderr)
                self.failed.append(topic)

    def _subscribe(self, topic: str, msgtype: str, publishers: Sequence[object]) -> None:
        try:
            msg_class = import_message_type(msgtype)
        except EchoError as error:
            raise BagError(self.writer.path, f"cannot record {topic}: {error}") from None
        profiles = [p.qos_profile for p in publishers]
        self.writer.add_topic(topic, msgtype, [bag_qos(p) for p in profiles])
        self._check_hash(topic, msgtype, {str(p.topic_type_hash) for p in publishers})
        qos = compatible_profile([p.reliability for p in profiles], [p.durability for p in profiles],
                                 SUBSCRIPTION_DEPTH)
        self._subscriptions.append(self.node.create_subscription(
            msg_class, topic, lambda data, t=topic: self._on_message(t, data), qos, raw=True))
        print(f"recording {topic} ({msgtype}, {qos.reliability.name.lower()})", file=sys.stderr)

    def _check_hash(self, topic: str, msgtype: str, graph_hashes: set[str]) -> None:
        # a stale build of fatigue_msgs publishes another layout than the .msg files the bag describes
        ours = self.writer.typestore.hash_rihs01(msgtype)
        others = {h for h in graph_hashes if h.startswith("RIHS01_") and h != ours}
        if others:
            print(f"warning: {topic}: the publisher's type hash {', '.join(sorted(others))} differs from {ours} "
                  f"of the {msgtype} definition stored in the bag (rebuild the message package?)", file=sys.stderr)

    def _on_message(self, topic: str, data: bytes) -> None:
        if self.limit is not None and self.received >= self.limit:
            return
        self.writer.write_raw(topic, self.node.get_clock().now().nanoseconds, data)
        self.received += 1


def _done(options: RecordOptions, recorder: Recorder, stop: Stop, started: float) -> bool:
    if stop.requested:
        return True
    if options.duration_s is not None and time.monotonic() - started >= options.duration_s:
        return True
    return options.count is not None and recorder.received >= options.count


def record(options: RecordOptions) -> int:
    """Record until stopped; 0 when every topic was recorded, 1 when some could not be (no publisher, bad type)."""
    writer = BagWriter(options.out, storage=options.storage, distro=options.distro, overwrite=options.overwrite)
    stop = Stop()
    rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(f"fatigue_llm_bag_record_{int(time.time() * 1000) % 10**9}")
    try:
        with writer:
            recorder = Recorder(node, writer, options.topics, options.count)
            started = time.monotonic()
            next_discovery = 0.0
            while not _done(options, recorder, stop, started):
                if recorder.pending and time.monotonic() >= next_discovery:
                    recorder.discover()
                    next_discovery = time.monotonic() + 0.1
                rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        stop.restore()
    print(f"recorded {recorder.received} message(s) to {writer.path}", file=sys.stderr)
    if recorder.pending:
        print(f"error: {writer.path}: no publisher appeared on {', '.join(recorder.pending)}", file=sys.stderr)
    return 1 if recorder.pending or recorder.failed else 0
