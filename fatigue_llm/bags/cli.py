"""``fatigue-llm bag record | play | info``: rosbag2 bags without a ROS 2 installation (like ``ros2 bag``).

Exit codes: 0 done; 1 the bag is only partly readable (info/play went as far as possible); 2 bad input
(missing or unreadable bag, unknown message type, nothing to play) - always one ``error:`` line, no traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from typing import TextIO

from fatigue_llm.bags.errors import BagError
from fatigue_llm.bags.reader import BagReader, open_bag
from fatigue_llm.bags.typestore import DEFAULT_DISTRO, DISTROS
from fatigue_llm.bags.writer import DEFAULT_STORAGE, STORAGES

LABEL_WIDTH = 19  # column of the values, as ros2 bag info aligns them


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fatigue-llm bag", description="record, play and inspect rosbag2 bags")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    record = sub.add_parser("record", help="record topics into a new bag")
    record.add_argument("topics", nargs="+", metavar="TOPIC", help="topics to record (their types are discovered)")
    record.add_argument("--out", "-o", required=True, metavar="BAG", help="bag folder to create")
    record.add_argument("--storage", choices=STORAGES, default=DEFAULT_STORAGE)
    record.add_argument("--distro", choices=DISTROS, default=DEFAULT_DISTRO, help="ROS 2 distro that will read it")
    record.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    record.add_argument("--count", type=int, metavar="N", help="stop after N messages (all topics together)")
    record.add_argument("--overwrite", action="store_true", help="replace an existing bag at --out")

    play = sub.add_parser("play", help="publish a bag's messages with their recorded timing")
    play.add_argument("bag", metavar="BAG")
    play.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2 = twice as fast)")
    play.add_argument("--loop", action="store_true", help="start again at the end (until Ctrl-C)")
    play.add_argument("--topics", nargs="+", metavar="TOPIC", help="play only these topics")
    play.add_argument("--start", type=float, default=0.0, metavar="S", help="skip the first S seconds of the bag")
    play.add_argument("--clock", nargs="?", type=float, const=40.0, metavar="HZ",
                      help="publish the bag time on /clock (rosgraph_msgs/Clock) at HZ (default 40)")
    play.add_argument("--wait-subscribers", type=float, default=2.0, metavar="S",
                      help="wait up to S seconds for a subscriber on every topic before playing")
    play.add_argument("--distro", choices=DISTROS, default=DEFAULT_DISTRO)

    info = sub.add_parser("info", help="summary of a bag (like ros2 bag info)")
    info.add_argument("bag", metavar="BAG")
    info.add_argument("--distro", choices=DISTROS, default=DEFAULT_DISTRO)
    info.add_argument("--verify", action="store_true",
                      help="read and decode every message (finds damage that the file structure does not show)")
    return parser


# -- info ------------------------------------------------------------------------------------------------
def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def format_stamp(stamp_ns: int) -> str:
    seconds, nanos = divmod(stamp_ns, 1_000_000_000)
    when = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%b %e %Y %H:%M:%S")
    return f"{when}.{nanos:09d} ({seconds}.{nanos:09d})"


def _line(label: str, value: str) -> str:
    return f"{label + ':':<{LABEL_WIDTH}}{value}"


def format_info(bag: BagReader) -> str:
    """The summary ``ros2 bag info`` prints, in its layout."""
    topics = list(bag.topics.values())
    files = [str(p.name) for p in bag.files]
    lines = [_line("Files", files[0] if files else "")] + [" " * LABEL_WIDTH + f for f in files[1:]]
    lines += [
        _line("Bag size", format_size(bag.size_bytes)),
        _line("Storage id", bag.storage),
        _line("Duration", f"{bag.duration_ns / 1e9:.9f}s"),
        _line("Start", format_stamp(bag.start_ns) if bag.message_count else "-"),
        _line("End", format_stamp(bag.end_ns) if bag.message_count else "-"),
        _line("Messages", str(bag.message_count)),
    ]
    rows = [f"Topic: {t.name} | Type: {t.msgtype} | Count: {t.count} | Serialization Format: {t.serialization_format}"
            for t in topics]
    lines.append(_line("Topic information", rows[0] if rows else ""))
    lines += [" " * LABEL_WIDTH + row for row in rows[1:]]
    return "\n".join(lines)


def verify(bag: BagReader) -> BagError | None:
    """Read and decode every message of a known type; the first decoding error (damage sets ``bag.error``)."""
    unknown = bag.unknown_types()
    first: BagError | None = None
    for message in bag.messages():
        if message.topic in unknown or first is not None:
            continue
        try:
            message.decode()
        except BagError as error:
            first = error
    return first


def info(path: str, distro: str = DEFAULT_DISTRO, check: bool = False, out: TextIO = sys.stdout,
         err: TextIO = sys.stderr) -> int:
    """Print the summary (from the index, like ros2 bag info; ``check``: after reading everything)."""
    with open_bag(path, distro=distro) as bag:
        undecodable = verify(bag) if check else None
        out.write(format_info(bag) + "\n")
        status = 0
        if undecodable is not None:
            print(f"error: {undecodable}", file=err)
            status = 1
        for topic, msgtype in bag.unknown_types().items():
            print(f"error: {bag.path}: unknown message type {msgtype} on {topic}: not in the {distro} typestore "
                  "and the bag carries no definition (cannot be decoded)", file=err)
            status = 1
        if bag.error is not None:
            print(f"error: {bag.error}", file=err)
            status = 1
        return status


# -- entry point -----------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.verb == "info":
            return info(args.bag, args.distro, args.verify)
        if args.verb == "record":
            from fatigue_llm.bags.record import RecordOptions, record

            return record(RecordOptions(topics=args.topics, out=args.out, storage=args.storage, distro=args.distro,
                                        duration_s=args.duration, count=args.count, overwrite=args.overwrite))
        if args.verb == "play":
            from fatigue_llm.bags.play import PlayOptions, play

            return play(PlayOptions(bag=args.bag, rate=args.rate, loop=args.loop, topics=args.topics,
                                    start_s=args.start, clock_hz=args.clock, wait_subscribers_s=args.wait_subscribers,
                                    distro=args.distro))
    except BagError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # bad option values (a rate of 0, ...)
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
