"""``fatigue-llm intervene``: one intervention for a features JSON file, printed as JSON.

    fatigue-llm intervene --features FEATURES.json [--model PATH] [--backend llamacpp|transformers|onnxruntime]
                          [--params FILE] [--state-dir DIR] [--json]

The features file is one JSON object of FatigueFeatures fields (missing ones are NaN / 0). The rule
level comes from the deterministic policy (without cooldown); the engine then asks the on-device model.
Exit 0 with the decision; 2 with a message naming the file or field when an input is wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from fatigue_llm.config import ConfigError, load_config
from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.intervention.config import InterventionConfig
from fatigue_llm.llm.config import LlmConfig

OUTPUT_FIELDS = (
    "level", "action", "message", "source", "confidence", "escalated", "explanation", "latency_ms",
)


def read_features(path: Path) -> FatigueFeatures:
    """FatigueFeatures from a JSON file. Raises ValueError naming the file, field or position.

    An absent feature is a field left out or null; NaN / Infinity literals (not JSON, though Python reads them)
    and values outside a field's physical range are refused, every bad field named in one message.
    """

    class Literal(str):
        """A NaN / Infinity / -Infinity literal, kept apart so its field can be named."""

    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"{path}: cannot read features file ({error.strerror})") from None
    try:
        data = json.loads(text, parse_constant=Literal)
    except json.JSONDecodeError as error:
        where = f"{error.msg}, line {error.lineno} column {error.colno}"
        raise ValueError(f"{path}: not valid JSON ({where})") from None
    except (ValueError, RecursionError) as error:  # e.g. an integer of too many digits, nesting too deep
        raise ValueError(f"{path}: not valid JSON ({error or 'nested too deeply'})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of feature fields, got {type(data).__name__}")
    problems = [f"field '{name}' = {value} is not a JSON number; use null or omit the field for an absent feature"
                for name, value in data.items() if isinstance(value, Literal)]
    try:
        features = FatigueFeatures.from_dict({name: value for name, value in data.items()
                                              if not isinstance(value, Literal)}, source=str(path))
    except ValueError as error:
        problems.append(str(error).removeprefix(f"{path}: "))
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return features


def _configs(args: argparse.Namespace) -> tuple[InterventionConfig, LlmConfig]:
    """The rule policy's config (node 'intervention') and the model's (node 'llm') from --params."""
    rules, model = InterventionConfig(), LlmConfig()
    if args.params:
        rules = load_config(InterventionConfig, args.params, "intervention")
        model = load_config(LlmConfig, args.params, "llm")
    overrides = {}
    if args.model is not None:
        overrides["model_path"] = args.model
    if args.backend is not None:
        overrides["backend"] = args.backend
    model = dataclasses.replace(model, **overrides)
    rules.validate()
    model.validate()
    return rules, model


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fatigue-llm intervene", description=__doc__.split("\n")[0])
    parser.add_argument("--features", required=True, help="JSON file with FatigueFeatures fields")
    parser.add_argument("--model", help="GGUF file or HF folder (default: embedded SmolLM2-135M)")
    parser.add_argument("--backend", choices=("llamacpp", "transformers", "onnxruntime"))
    parser.add_argument("--params", help="ROS 2 parameter file (the 'intervention' and 'llm' nodes' sections)")
    parser.add_argument("--state-dir", default="models",
                        help="where the case store and outbox live (default models/)")
    parser.add_argument("--json", action="store_true", help="print the intervention as one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one intervention; see the module docstring for the exit codes."""
    from fatigue_llm.intervention.backends.base import BackendError
    from fatigue_llm.intervention.engine import InterventionEngine, rule_decision_for
    from fatigue_llm.intervention.models import ModelError

    os.environ["HF_HUB_OFFLINE"] = "1"
    args = _parser().parse_args(argv)
    try:
        features = read_features(Path(args.features))
        rules, config = _configs(args)
        engine = InterventionEngine(config, state_dir=Path(args.state_dir))
        engine.load()
    except (ValueError, ConfigError, ModelError, BackendError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        decision = engine.advise(features, rule_decision_for(features, rules))
    finally:
        engine.close()
    data = decision.to_json_dict()
    if args.json:
        print(json.dumps({name: data[name] for name in OUTPUT_FIELDS}))
    else:
        print(f"{data['level']} [{data['source']}] {data['action']}: {data['message']}\n"
              f"  confidence {data['confidence']:.2f}, escalated {data['escalated']}, "
              f"{data['latency_ms']:.0f} ms\n  {data['explanation']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
