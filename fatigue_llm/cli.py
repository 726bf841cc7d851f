"""``fatigue-llm``: one command-line tool for running, inspecting and evaluating the system."""

from __future__ import annotations

import argparse
import importlib
import sys

from fatigue_llm.config import ConfigError
from fatigue_llm.ros.environment import apply_local_dds_defaults

# Subcommands implemented by their stage's own ``main(argv)``: name -> (module, help)
DELEGATED = {
    "perceive": ("fatigue_llm.perception.offline", "run perception on a video/image folder -> CSV/JSON"),
    "sample-video": ("fatigue_llm.sim.driver_video", "generate a synthetic driver video with ground truth"),
    "simulate-drive": ("fatigue_llm.sim.drive", "simulate labelled vehicle signals -> CSV"),
    "simulate": ("fatigue_llm.sim.simulate", "simulate a labelled drive from a scenario YAML -> rosbag2 bag"),
    "intervene": ("fatigue_llm.intervention.cli", "one intervention for a features JSON file"),
    "model": ("fatigue_llm.intervention.convert", "convert / verify / verify-attention / quantize-nf4 models"),
    "train": ("fatigue_llm.training.train", "fine-tune the on-device LLM (LoRA / full) from a run config"),
    "export": ("fatigue_llm.training.export", "merge a run's LoRA adapter and export it as a verified GGUF"),
    "generate-data": ("fatigue_llm.training.generate", "generate a synthetic intervention cases CSV"),
    "evaluate": ("fatigue_llm.evaluation.evaluate", "replay bags through the system; results, metrics, HTML report"),
    "bag": ("fatigue_llm.bags.cli", "record / play / info rosbag2 bags (like ros2 bag)"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fatigue-llm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    launch = sub.add_parser("launch", help="start a node set (like ros2 launch)")
    launch.add_argument("launch", choices=["vehicle"], help="node set to start")
    launch.add_argument("--params", help="ROS 2 parameter file (default: config/vehicle.yaml)")
    launch.add_argument("--video", default="", help="video file used as the driver camera")
    launch.add_argument("--image-topic", default="", help="sensor_msgs/Image topic of the driver camera")
    launch.add_argument("--vehicle-csv", default="", help="CSV of vehicle signals to replay with the video")
    launch.add_argument("--namespace", default="", help="namespace for all nodes and topics")
    launch.add_argument("--loop", default="", choices=["", "true", "false"], help="restart the video at its end")
    launch.add_argument("--duration", type=float, help="stop after this many seconds")

    echo = sub.add_parser("echo", help="print messages of a topic as YAML (like ros2 topic echo)")
    echo.add_argument("topic")
    echo.add_argument("--count", type=int, help="exit after N messages")
    echo.add_argument("--timeout", type=float, help="give up after S seconds (exit 1)")

    demo = sub.add_parser("demo", help="run the node set on the sample drive and print interventions")
    demo.add_argument("--video", help="video file (default: the generated sample)")
    demo.add_argument("--params", help="ROS 2 parameter file (default: config/vehicle.yaml)")

    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    apply_local_dds_defaults()
    if argv and argv[0] in DELEGATED:
        module = importlib.import_module(DELEGATED[argv[0]][0])
        return int(module.main(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    try:
        if args.command == "launch":
            from fatigue_llm.ros.launcher import run_launch

            arguments = {"video": args.video, "image_topic": args.image_topic,
                         "vehicle_csv": args.vehicle_csv, "namespace": args.namespace, "loop": args.loop}
            return run_launch(args.launch, args.params, arguments, args.duration)
        if args.command == "echo":
            from fatigue_llm.ros.echo import echo

            return echo(args.topic, args.count, args.timeout)
        if args.command == "demo":
            from fatigue_llm.demo import run_demo

            return run_demo(args.video, args.params)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
