"""``fatigue-llm bag play``: publish a bag's raw CDR with its recorded timing (scaled by ``--rate``).

Each topic is published with the QoS its recorded publishers offered; ``--clock`` publishes the bag
time on /clock so nodes with ``use_sim_time`` follow the bag.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import rclpy
from builtin_interfaces.msg import Time
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock

from fatigue_llm.bags.errors import BagError
from fatigue_llm.bags.reader import BagReader, open_bag
from fatigue_llm.bags.record import Stop
from fatigue_llm.bags.rosqos import playback_profile
from fatigue_llm.ros.echo import EchoError, import_message_type

CLOCK_TOPIC = "/clock"
MAX_SLEEP_S = 0.05  # how late a stop request (Ctrl-C) may be noticed
ACK_TIMEOUT_S = 2.0
# A publisher sees a subscriber before that subscriber has matched the publisher; what is sent in between
# arrives late, in a burst, via reliable repair - which would distort the first messages' timing.
MATCH_SETTLE_S = 0.3  # at the end, how long reliable subscribers get to acknowledge the last messages


@dataclass(frozen=True)
class PlayOptions:
    bag: str | Path
    rate: float = 1.0
    loop: bool = False
    topics: Sequence[str] | None = None
    start_s: float = 0.0
    clock_hz: float | None = None
    wait_subscribers_s: float = 2.0
    distro: str = "kilted"

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"--rate must be > 0, not {self.rate}")
        if self.clock_hz is not None and not self.clock_hz > 0:
            raise ValueError(f"--clock must be > 0 Hz, not {self.clock_hz}")
        if self.start_s < 0:
            raise ValueError(f"--start must be >= 0 s, not {self.start_s}")


class BagClock:
    """Maps wall time to bag time: ``bag_ns`` at ``wall`` and ``rate`` bag seconds per wall second."""

    def __init__(self, bag_ns: int, rate: float) -> None:
        self.bag0 = bag_ns
        self.wall0 = time.monotonic()
        self.rate = rate

    def wall_at(self, stamp_ns: int) -> float:
        return self.wall0 + (stamp_ns - self.bag0) / 1e9 / self.rate

    def now_ns(self) -> int:
        return self.bag0 + int((time.monotonic() - self.wall0) * self.rate * 1e9)


def bag_publishers(node: Node, bag: BagReader, topics: set[str]) -> dict[str, Publisher]:
    publishers: dict[str, Publisher] = {}
    for info in bag.topics.values():
        if info.name not in topics:
            continue
        try:
            msg_class = import_message_type(info.msgtype)
        except EchoError as error:
            raise BagError(bag.path, f"cannot play {info.name}: {error}") from None
        publishers[info.name] = node.create_publisher(msg_class, info.name, playback_profile(info.offered_qos))
    return publishers


def _wait_for_subscribers(publishers: dict[str, Publisher], timeout_s: float, stop: Stop) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.requested:
        if all(p.get_subscription_count() > 0 for p in publishers.values()):
            time.sleep(MATCH_SETTLE_S)
            return
        time.sleep(0.02)


class ClockPublisher:
    def __init__(self, node: Node, hz: float | None) -> None:
        self.period = 1.0 / hz if hz else None
        self.publisher = node.create_publisher(Clock, CLOCK_TOPIC, QoSProfile(depth=10)) if hz else None
        self.next_due = 0.0

    def tick(self, clock: BagClock) -> None:
        if self.publisher is None or time.monotonic() < self.next_due:
            return
        seconds, nanos = divmod(clock.now_ns(), 1_000_000_000)
        self.publisher.publish(Clock(clock=Time(sec=seconds, nanosec=nanos)))
        self.next_due = time.monotonic() + self.period

    def wait(self) -> float:
        """Seconds until the next tick is due (inf without a clock)."""
        return max(0.0, self.next_due - time.monotonic()) if self.publisher is not None else float("inf")


def _sleep_until(wall: float, clock: BagClock, ticker: ClockPublisher, stop: Stop) -> bool:
    """Sleep until ``wall`` (monotonic), ticking /clock; False when a stop was requested."""
    while not stop.requested:
        ticker.tick(clock)
        left = wall - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, MAX_SLEEP_S, ticker.wait()) or 0.001)
    return False


def play_once(bag: BagReader, options: PlayOptions, publishers: dict[str, Publisher], ticker: ClockPublisher,
               stop: Stop, on_message: Callable[[], None]) -> None:
    start_ns = bag.start_ns + int(options.start_s * 1e9)
    messages = bag.messages(sorted(publishers), start_ns=start_ns)
    first = next(messages, None)  # opening the stream takes a while: start the clock only after it
    if first is None:
        return
    clock = BagClock(start_ns, options.rate)
    for message in itertools.chain([first], messages):
        if not _sleep_until(clock.wall_at(message.stamp_ns), clock, ticker, stop):
            return
        publishers[message.topic].publish(message.raw)
        on_message()
    ticker.tick(clock)


def flush_publishers(publishers: dict[str, Publisher]) -> None:
    for publisher in publishers.values():
        if publisher.qos_profile.reliability == ReliabilityPolicy.RELIABLE:
            publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))


def play(options: PlayOptions) -> int:
    """Play the bag (again and again with ``loop``); 0 at its end, 1 when it stopped at damage."""
    with open_bag(options.bag, distro=options.distro) as bag:
        topics = bag.select_topics(options.topics) if options.topics else set(bag.topics)
        if sum(bag.topics[t].count for t in topics) == 0:
            raise BagError(bag.path, "holds no messages on the chosen topics: nothing to play")
        stop = Stop()
        rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node(f"fatigue_llm_bag_play_{int(time.time() * 1000) % 10**9}")
        played = 0

        def count() -> None:
            nonlocal played
            played += 1

        try:
            publishers = bag_publishers(node, bag, topics)
            ticker = ClockPublisher(node, options.clock_hz)
            _wait_for_subscribers(publishers, options.wait_subscribers_s, stop)
            while not stop.requested:
                play_once(bag, options, publishers, ticker, stop, count)
                if not options.loop or bag.error is not None:
                    break
            flush_publishers(publishers)
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
            stop.restore()
        print(f"played {played} message(s) from {bag.path}", file=sys.stderr)
        if bag.error is not None:
            print(f"error: {bag.error}", file=sys.stderr)
            return 1
        return 0
