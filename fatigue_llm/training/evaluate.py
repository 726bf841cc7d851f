"""Evaluate a fine-tuned model the way the car uses it: the intervention engine (transformers backend, the
run's adapter) on held-out cases, next to the base model.

For each held-out case with a label the engine gets the rule decision for its features and answers under
the engine's schema; measured per model:

- perplexity of the labelled answers (teacher-forced, answer and end-of-turn tokens only, as in training);
- level and action accuracy against the label;
- ``accepted_as_written``: the share of answers the engine published as the model wrote them (not replaced
  by the rule's or the catalogue's text);
- latency p50 / p95 of ``engine.advise``.

``fatigue-llm train --config RUN.yaml --mode evaluate`` writes OUTPUT/eval.json (atomically) and appends
the figures to OUTPUT/metrics.jsonl; ``--mode compare`` adds the base model and sample outputs side by side;
``--mode generate --features F.json`` prints one intervention from the adapter.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fatigue_llm.training.config import RunConfig
from fatigue_llm.training.data import IGNORE_INDEX, Conversation, DataError, load_conversations, split

SAMPLES = 5  # outputs shown side by side in compare mode


@dataclass(frozen=True)
class ModelUnderTest:
    label: str          # "base" or "adapter"
    lora_path: str      # "" for the base


def adapter_dir(config: RunConfig) -> Path:
    folder = config.resolve(config.output.dir) / "adapter"
    if not (folder / "adapter_model.safetensors").is_file():
        raise DataError(f"{folder}: no trained adapter (adapter_model.safetensors); run --mode train first")
    return folder


def held_out_cases(config: RunConfig, tokenizer, limit: int) -> list[Conversation]:
    """The run's validation cases (its explicit file, or the same seeded split training used)."""
    from fatigue_llm.llm.config import LlmConfig
    from fatigue_llm.training.train import engine_prompt_builder

    build = engine_prompt_builder(tokenizer, LlmConfig().max_message_chars, retrieval_k=config.data.retrieval_k)
    if config.data.validation:
        cases = load_conversations(config.resolve(config.data.validation), config.data.format, build)
    else:
        everything = load_conversations(config.resolve(config.data.train), config.data.format, build)
        _, cases = split([c for c in everything if c.answerable], config.data.validation_fraction, config.data.seed)
    cases = [c for c in cases if c.answerable and c.features is not None]
    if not cases:
        raise DataError(f"{config.source}: no labelled held-out cases to evaluate (cases CSV data with "
                        "data.validation or data.validation_fraction > 0)")
    return cases[:limit]


def _soft_logits(backend, projector, case: Conversation, max_length: int):
    """(encoded example, logits) of ``case`` in the soft-prompt mode: the projector's virtual tokens in place
    of the feature text, as in training with ``projector.enabled``."""
    import dataclasses

    import torch

    from fatigue_llm.llm.config import LlmConfig
    from fatigue_llm.training.softprompt import encode_soft, splice
    from fatigue_llm.training.train import engine_prompt_builder

    build = engine_prompt_builder(backend.tokenizer, LlmConfig().max_message_chars, soft_prompt=True)
    soft_case = dataclasses.replace(case, prompt=tuple(build(case.features)[0]))
    encoded = encode_soft(backend.tokenizer, soft_case, max_length, projector)
    with torch.inference_mode():
        embeds = splice(backend.model, projector, torch.tensor([encoded["input_ids"]]),
                        torch.tensor([encoded["soft_start"]]), torch.tensor([encoded["soft_input"]]))
        return encoded, backend.model(inputs_embeds=embeds).logits[0].float().numpy()


def _perplexity(backend, cases: list[Conversation], max_length: int, projector=None) -> float:
    """Perplexity of the labelled answers; with the engine's ``projector`` in the soft-prompt mode."""
    import numpy as np

    from fatigue_llm.training.data import tokenize_conversation

    total, count = 0.0, 0
    for case in cases:
        if projector is None:
            encoded = tokenize_conversation(backend.tokenizer, case, max_length)
            logits = backend.logits(encoded["input_ids"])
        else:
            encoded, logits = _soft_logits(backend, projector, case, max_length)
        for position, label in enumerate(encoded["labels"][1:]):
            if label != IGNORE_INDEX:
                row = logits[position]
                top = float(np.max(row))
                total += top + math.log(float(np.sum(np.exp(row - top)))) - float(row[label])
                count += 1
    return math.exp(total / count)


def answer_cases(engine, cases: list[Conversation]) -> list[dict]:
    """The loaded engine's decision for each case, beside its label."""
    from fatigue_llm.intervention.config import InterventionConfig
    from fatigue_llm.intervention.engine import rule_decision_for
    from fatigue_llm.intervention.types import Source

    rules, rows = InterventionConfig(), []
    for case in cases:
        started = time.perf_counter()
        decision = engine.advise(case.features, rule_decision_for(case.features, rules))
        rows.append({"level": decision.level.name, "action": decision.action, "message": decision.message,
                     "label_level": case.level, "label_action": case.action,
                     "as_written": decision.source == Source.LOCAL_LLM and "catalogue text" not in decision.explanation,
                     "latency_s": time.perf_counter() - started})
    return rows


def _level_rank(name: str) -> int:
    from fatigue_llm.intervention.types import Level

    return int(Level[name])


def summarise(label: str, rows: list[dict]) -> dict:
    """Accuracy, share published as written and latency of ``answer_cases`` rows."""
    latencies = sorted(r["latency_s"] for r in rows)
    return {
        "model": label, "cases": len(rows),
        "level_accuracy": statistics.fmean(r["level"] == r["label_level"] for r in rows),
        "action_accuracy": statistics.fmean(r["action"] == r["label_action"] for r in rows),
        "accepted_as_written": statistics.fmean(r["as_written"] for r in rows),
        # the failure that matters most in a car besides missing fatigue: alarming a driver beyond the case
        "over_escalated": statistics.fmean(_level_rank(r["level"]) > _level_rank(r["label_level"]) for r in rows),
        "latency_s_p50": statistics.median(latencies),
        "latency_s_p95": latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)],
        "rows": rows,
    }


def evaluate_engine(llm, cases: list[Conversation], label: str) -> dict:
    """``summarise`` of the engine built from ``llm`` (an LlmConfig) on ``cases``, in a scratch state dir."""
    from fatigue_llm.intervention.engine import InterventionEngine

    with tempfile.TemporaryDirectory(prefix="fatigue-eval-") as state:
        engine = InterventionEngine(llm, state_dir=Path(state))
        engine.load()
        try:
            return summarise(label, answer_cases(engine, cases))
        finally:
            engine.close()


def evaluate_model(config: RunConfig, model: ModelUnderTest, cases: list[Conversation]) -> dict:
    from fatigue_llm.intervention.engine import InterventionEngine
    from fatigue_llm.llm.config import LlmConfig

    llm = LlmConfig(backend="transformers", model_path=config.model.path, lora_path=model.lora_path,
                    retrieval_k=config.data.retrieval_k, generation_deadline=120.0,  # as the training prompts
                    prefix_tokens=config.projector.n_tokens)  # a trained projector beside the adapter: soft prompt
    with tempfile.TemporaryDirectory(prefix="fatigue-eval-") as state:
        engine = InterventionEngine(llm, state_dir=Path(state))
        engine.load()
        try:
            backend = engine._parts.backend  # noqa: SLF001 - the same loaded model scores the perplexity
            perplexity = _perplexity(backend, cases, config.training.max_length,
                                     engine._parts.projector)  # noqa: SLF001
            rows = answer_cases(engine, cases)
        finally:
            engine.close()
    summary = summarise(model.label, rows)
    return {"model": summary.pop("model"), "cases": summary.pop("cases"), "perplexity": perplexity, **summary}


def run_evaluation(config: RunConfig, compare: bool, limit: int) -> dict:
    from fatigue_llm.intervention.backends.transformers_backend import load_model
    from fatigue_llm.intervention.models import resolve_model
    from fatigue_llm.training.train import _atomic_write

    adapter = adapter_dir(config)
    _, tokenizer = load_model(resolve_model(config.model.path))
    cases = held_out_cases(config, tokenizer, limit)
    models = [ModelUnderTest("adapter", str(adapter))]
    if compare:
        models.insert(0, ModelUnderTest("base", ""))
    results = [evaluate_model(config, model, cases) for model in models]
    report = {"run": config.source, "adapter": str(adapter), "results": results}
    if compare:
        base, tuned = results
        report["samples"] = [{"label": f"{b['label_level']} {b['label_action']}",
                              "base": f"{b['level']} {b['action']}: {b['message']}",
                              "adapter": f"{t['level']} {t['action']}: {t['message']}"}
                             for b, t in list(zip(base["rows"], tuned["rows"], strict=True))[:SAMPLES]]
    out = config.resolve(config.output.dir)
    _atomic_write(out / "eval.json", json.dumps(report, indent=2) + "\n")
    with (out / "metrics.jsonl").open("a") as handle:
        for result in results:
            handle.write(json.dumps({"eval_mode": "engine", "time": time.time(),
                                     **{k: v for k, v in result.items() if k != "rows"}}) + "\n")
    return report


def table(report: dict) -> str:
    lines = ["| model | cases | perplexity | level acc | action acc | over-escalated | accepted as written | "
             "latency p50 / p95 s |", "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['model']} | {r['cases']} | {r['perplexity']:.2f} | {r['level_accuracy']:.2f} | "
                     f"{r['action_accuracy']:.2f} | {r['over_escalated']:.2f} | {r['accepted_as_written']:.2f} | "
                     f"{r['latency_s_p50']:.2f} / {r['latency_s_p95']:.2f} |")
    for sample in report.get("samples", []):
        lines.append(f"\nlabel {sample['label']}\n  base:    {sample['base']}\n  adapter: {sample['adapter']}")
    return "\n".join(lines)


def generate_one(config: RunConfig, features_file: Path) -> dict:
    """One intervention from the run's adapter for a features JSON file (as ``fatigue-llm intervene``)."""
    from fatigue_llm.intervention.cli import read_features
    from fatigue_llm.intervention.config import InterventionConfig
    from fatigue_llm.intervention.engine import InterventionEngine, rule_decision_for
    from fatigue_llm.llm.config import LlmConfig

    features = read_features(features_file)
    llm = LlmConfig(backend="transformers", model_path=config.model.path, lora_path=str(adapter_dir(config)),
                    generation_deadline=120.0)  # the llm node's retrieval, as `fatigue-llm intervene`
    with tempfile.TemporaryDirectory(prefix="fatigue-generate-") as state:
        engine = InterventionEngine(llm, state_dir=Path(state))
        engine.load()
        try:
            decision = engine.advise(features, rule_decision_for(features, InterventionConfig()))
        finally:
            engine.close()
    return decision.to_json_dict()
