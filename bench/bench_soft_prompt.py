"""Soft prompt vs feature text: accuracy and latency of the intervention engine, side by side in one run.

Two runs of the project's own training pipeline on the same generated data (``fatigue-llm generate-data``),
the embedded SmolLM2-135M, the same LoRA settings and steps (``configs/smollm2_softprompt.yaml`` with only
the sizes a benchmark needs changed):

- ``text``: LoRA, the engine's prompt with the feature text (``projector.enabled: false``);
- ``soft``: LoRA + feature projector (``projector.enabled: true``): the virtual tokens replace the feature
  text, in training and in the engine.

Both use ``training.frozen_prefix`` (the shared system prompt run once per batch without gradient), which is
what makes a few hundred examples fit in minutes on 2 CPU cores. Each adapter is exported as a llama.cpp LoRA
GGUF (``export_lora_gguf``, which copies the projector beside it) and both are evaluated by the engine on the
same held-out generated cases (another seed), no retrieved cases (as in training):

- llama.cpp backend (what the car runs; the embedded Q4_1 base + the LoRA GGUF; the soft prompt fed as an
  embedding batch) on ``--cases`` cases;
- transformers backend (reference: the peft adapter, the soft prompt as inputs_embeds) on ``--reference-cases``.

Then, on llama.cpp, each case is shown another case's features with its own rule decision (``shift_features``):
the accuracy lost is what each model took from the features, for the soft prompt from its virtual tokens alone.

Per model: level / action accuracy against the labels, prompt tokens evaluated per request (prompt tokens +
virtual ones - those reused or restored from a saved state: the system prefix, and for the soft prompt the
rule line before its virtual tokens once a request with that rule has run), prompt-eval time p50 (llama.cpp:
the evaluation of those tokens alone, with any state restore, timed separately from the same context
state), time to the first decision token p50 and the total ``engine.advise`` latency p50; then the soft /
text ratios with 95 % paired bootstrap intervals for the accuracies, and whether the issue's goal is met
(accuracy >= 95 % of the text prompt's at >= 2x lower latency).
Two baselines put the accuracies in scale: copying the rule decision of the prompt, and a logistic regression
on the features and the rule trained on the same rows (what the features can tell about the noisy labels).

The issue's latency premise is TinyLlama's (~80 feature tokens, ~1 s of a 1.8 s answer): the first
``--tinyllama-cases`` requests are also timed on the TinyLlama-1.1B shape (bench_llm's random-weight Q4_0
GGUF, an untrained projector of its hidden size), text against soft prompt; times only.

    .venv/bin/python bench/bench_soft_prompt.py [--rows 400] [--steps 8] [--batch 8] [--cases 40]
        [--reference-cases 8] [--tinyllama-cases 10] [--work runs/bench-soft-prompt] [--reuse] [--threads 2]

``--reuse`` keeps trained runs found in ``--work`` (evaluation only). Prints a markdown table and writes
bench/results/soft_prompt.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench_llm import DEFAULT_CACHE  # the same cached random TinyLlama

os.environ["HF_HUB_OFFLINE"] = "1"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results" / "soft_prompt.json"
BASE_CONFIG = REPO / "configs" / "smollm2_softprompt.yaml"
GOAL_ACCURACY = 0.95   # soft accuracy / text accuracy
GOAL_SPEEDUP = 2.0     # text latency / soft latency
TRAIN_SEED, HELD_OUT_SEED = 11, 12  # generate-data seeds of the training rows and the held-out cases


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_data(work: Path, rows: int, cases: int) -> tuple[Path, Path]:
    from fatigue_llm.training.generate import generate_cases, write_csv

    train, held_out = work / "train.csv", work / "held_out.csv"
    write_csv(train, generate_cases(rows, seed=TRAIN_SEED))
    write_csv(held_out, generate_cases(max(cases * 2, 20), seed=HELD_OUT_SEED))  # unanswerable ones are dropped later
    return train, held_out


def run_config(work: Path, variant: str, train_csv: Path, args) -> Path:
    data = yaml.safe_load(BASE_CONFIG.read_text())
    data["training"].update(max_steps=args.steps, batch_size=args.batch, gradient_accumulation=1,
                            logging_steps=1, save_steps=10**6, eval_steps=10**6, early_stopping_patience=0,
                            frozen_prefix=True)
    data["projector"]["enabled"] = variant == "soft"
    data["data"] = {"train": str(train_csv), "format": "cases_csv", "validation_fraction": 0.0, "seed": 0}
    data["output"] = {"dir": str(work / variant)}
    path = work / f"{variant}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def train_variant(config_path: Path, reuse: bool) -> dict:
    from fatigue_llm.training.config import load_run_config
    from fatigue_llm.training.train import train

    config = load_run_config(config_path)
    out = config.resolve(config.output.dir)
    if reuse and (out / "run.json").is_file() and (out / "adapter" / "adapter_model.safetensors").is_file():
        return {**json.loads((out / "run.json").read_text())["final"], "reused": True}
    started = time.perf_counter()
    summary = train(config)
    return {**summary["final"], "train_s": round(time.perf_counter() - started, 1)}


def held_out(held_csv: Path, limit: int) -> list:
    from fatigue_llm.intervention.backends.transformers_backend import load_model
    from fatigue_llm.intervention.models import resolve_model
    from fatigue_llm.llm.config import LlmConfig
    from fatigue_llm.training.data import load_conversations
    from fatigue_llm.training.train import engine_prompt_builder

    _, tokenizer = load_model(resolve_model(""))
    build = engine_prompt_builder(tokenizer, LlmConfig().max_message_chars)
    cases = [c for c in load_conversations(held_csv, "cases_csv", build) if c.answerable and c.features is not None]
    return cases[:limit]


def _prompt_eval_s(engine, features, rule) -> float:
    """llama.cpp: seconds to bring the context from the cached prefix to the end of one request's prompt
    (tokens and virtual ones evaluated, saved states restored), from the state a request starts in (another
    prompt held in the context)."""
    from fatigue_llm.intervention.backends.base import Deadline

    parts = engine._parts  # noqa: SLF001 - benchmark instrumentation
    backend = parts.backend
    messages = engine.request_messages(features, rule, [])
    soft = parts.projector.soft_prompt(features) if parts.projector is not None else None
    with backend._lock:  # noqa: SLF001
        tokens = backend._tokenize_prompt(backend._render(messages))  # noqa: SLF001
        array = None if soft is None else backend._soft(soft)  # noqa: SLF001
        slot = backend._slot(messages, tokens)  # noqa: SLF001
        deadline = Deadline(float("inf"))
        started = time.perf_counter()
        _, view = backend._prime(tokens, array, slot, deadline)  # noqa: SLF001
        backend._eval(view[backend.llm.n_tokens:], deadline)  # noqa: SLF001
        seconds = time.perf_counter() - started
        backend.llm.n_tokens = len(backend._prefix_tokens)  # noqa: SLF001 - back to the bare prefix
    return seconds


class _Requests:
    """One engine answering held-out cases, with each answer's generation recorded."""

    def __init__(self, llm, state: Path) -> None:
        from fatigue_llm.intervention.engine import InterventionEngine

        self.engine = InterventionEngine(llm, state_dir=state)
        self.engine.load()
        backend = self.engine._parts.backend  # noqa: SLF001 - benchmark instrumentation
        self.soft = self.engine._parts.projector is not None  # noqa: SLF001
        self.generations: list = []
        generate = backend.generate

        def recording(*a, **k):
            generation = generate(*a, **k)
            self.generations.append(generation)
            return generation

        backend.generate = recording

    def answer(self, case, shown, rule, prompt_timing: bool) -> dict:
        prompt_s = _prompt_eval_s(self.engine, shown, rule) if prompt_timing else float("nan")
        self.generations.clear()
        started = time.perf_counter()
        decision = self.engine.advise(shown, rule)
        latency = time.perf_counter() - started
        generation = self.generations[-1] if self.generations else None
        return {
            "level": decision.level.name, "action": decision.action, "message": decision.message,
            "label_level": case.level, "label_action": case.action, "source": decision.source,
            "rule_level": rule.level.name, "rule_action": rule.action,
            "latency_s": latency, "prompt_eval_s": prompt_s,
            "ttft_s": generation.ttft_s if generation else float("nan"),
            "evaluated_tokens": (generation.prompt_tokens - generation.cached_tokens) if generation else 0,
            "text_passes": generation.text_passes if generation else 0,
        }


def evaluate(llms: dict, cases: list, prompt_timing: bool, shift_features: int = 0) -> dict:
    """The answers of each engine of ``llms`` (label -> LlmConfig) to ``cases``, side by side: every case is
    put to all of them in turn (the order alternating from case to case), so a change in the machine's speed
    during the run hits them alike. ``shift_features`` > 0 shows each case the features of the case that many
    places on (its own rule decision stays): what the answers lose then is what they took from the features
    (for the soft prompt: from its virtual tokens alone). Returns label -> summary."""
    from fatigue_llm.intervention.config import InterventionConfig
    from fatigue_llm.intervention.engine import rule_decision_for

    rules = InterventionConfig()
    rows: dict[str, list[dict]] = {label: [] for label in llms}
    with tempfile.TemporaryDirectory(prefix="bench-soft-") as state:
        requests = {}
        try:
            for label, llm in llms.items():
                requests[label] = _Requests(llm, Path(state) / label)
            for index, case in enumerate(cases):
                rule = rule_decision_for(case.features, rules)
                shown = cases[(index + shift_features) % len(cases)].features
                order = list(llms) if index % 2 == 0 else list(reversed(llms))
                for label in order:
                    rows[label].append(requests[label].answer(case, shown, rule, prompt_timing))
        finally:
            for request in requests.values():
                request.engine.close()
    return {label: summary(label, requests[label].soft, rows[label]) for label in llms}


def summary(label: str, soft: bool, rows: list[dict]) -> dict:
    return {
        "model": label, "soft_prompt": soft, "cases": len(rows),
        "level_accuracy": statistics.fmean(r["level"] == r["label_level"] for r in rows),
        "action_accuracy": statistics.fmean(r["action"] == r["label_action"] for r in rows),
        "llm_answers": statistics.fmean(r["source"] == "local_llm" for r in rows),
        # what copying the rule decision in the prompt scores: a model at this level has not used the features
        "rule_level_accuracy": statistics.fmean(r["rule_level"] == r["label_level"] for r in rows),
        "rule_action_accuracy": statistics.fmean(r["rule_action"] == r["label_action"] for r in rows),
        "same_as_rule": statistics.fmean((r["level"], r["action"]) == (r["rule_level"], r["rule_action"])
                                         for r in rows),
        "evaluated_tokens_p50": _p50([r["evaluated_tokens"] for r in rows]),
        "prompt_eval_s_p50": _p50([r["prompt_eval_s"] for r in rows]),
        "ttft_s_p50": _p50([r["ttft_s"] for r in rows]),
        "latency_s_p50": _p50([r["latency_s"] for r in rows]),
        "message_tokens_p50": _p50([r["text_passes"] for r in rows]),
        "rows": rows,
    }


def tinyllama_latency(cases: list, n_tokens: int, threads: int, work: Path, cache_dir: Path) -> dict:
    """The same requests on the TinyLlama-1.1B shape (bench_llm's random-weight Q4_0 GGUF, llama.cpp): text
    prompt against a soft prompt of ``n_tokens`` virtual tokens (an untrained projector of TinyLlama's hidden
    size: the timing is the same). Random weights answer nonsense, so only the times count; the message
    tokens decoded are reported beside them (random text tends to run to ``max_message_chars``, so the whole
    answer is a longer one than a trained model writes and its speed-up a lower bound)."""
    from bench_llm import prepare_models

    from fatigue_llm.intervention.projector import FeatureProjector
    from fatigue_llm.llm.config import LlmConfig

    paths = prepare_models(cache_dir, threads)
    hidden = json.loads((Path(paths["tinyllama_hf"]) / "config.json").read_text())["hidden_size"]
    projector = work / "tinyllama-projector.safetensors"
    FeatureProjector(n_tokens, hidden, seed=0).save(projector)
    common = dict(backend="llamacpp", model_path=paths["tinyllama_q4_0"], retrieval_k=0, generation_deadline=300.0,
                  n_threads=threads, prefix_tokens=n_tokens)
    answers = evaluate({"text": LlmConfig(**common), "soft": LlmConfig(**common, projector_path=str(projector))},
                       cases, prompt_timing=True)
    text, soft = answers["text"], answers["soft"]
    assert not text["soft_prompt"] and soft["soft_prompt"], "soft prompt on/off as intended"
    keys = ("cases", "evaluated_tokens_p50", "prompt_eval_s_p50", "ttft_s_p50", "latency_s_p50", "message_tokens_p50")
    ratios = compare(text, soft)
    return {"text": {k: text[k] for k in keys}, "soft": {k: soft[k] for k in keys},
            **{k: ratios[k] for k in ("prompt_eval_speedup", "ttft_speedup", "latency_speedup")}}


def feature_classifier(rows: int, cases: list) -> dict:
    """What the features and the rule can tell about the labels at all: a multinomial logistic regression
    (torch, full batch) per label on the same training rows (normalised features + presence mask + the rule's
    level and action, one-hot), scored on the same held-out cases. The generator draws the hidden sleepiness
    and then the action at random among a level's choices, so even this is far from 1."""
    import torch

    from fatigue_llm.intervention.config import InterventionConfig
    from fatigue_llm.intervention.engine import rule_decision_for
    from fatigue_llm.intervention.projector import normalise
    from fatigue_llm.intervention.types import LEVEL_ACTION_CHOICES
    from fatigue_llm.training.generate import generate_cases

    rules = InterventionConfig()
    levels = list(LEVEL_ACTION_CHOICES)
    actions = sorted({a for choices in LEVEL_ACTION_CHOICES.values() for a in choices})

    def inputs(features) -> list[float]:
        values, mask = normalise(features)
        rule = rule_decision_for(features, rules)
        return [*values, *mask, *(float(rule.level == level) for level in levels),
                *(float(rule.action == action) for action in actions)]

    train = generate_cases(rows, seed=TRAIN_SEED)  # write_data's training rows
    x_train = torch.tensor([inputs(c.features) for c in train])
    x_test = torch.tensor([inputs(c.features) for c in cases])
    scores = {}
    for key, vocab, train_labels, test_labels in (
            ("level", [level.name for level in levels], [c.level.name for c in train], [c.level for c in cases]),
            ("action", actions, [c.action for c in train], [c.action for c in cases])):
        torch.manual_seed(0)
        model = torch.nn.Linear(x_train.shape[1], len(vocab))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
        target = torch.tensor([vocab.index(label) for label in train_labels])
        for _ in range(500):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train), target).backward()
            optimizer.step()
        with torch.no_grad():
            predicted = [vocab[i] for i in model(x_test).argmax(dim=1).tolist()]
        scores[f"{key}_accuracy"] = statistics.fmean(p == label for p, label in zip(predicted, test_labels,
                                                                                     strict=True))
    return scores


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def compare(text: dict, soft: dict) -> dict:
    pairs = list(zip(text["rows"], soft["rows"], strict=False))
    return {
        "same_decisions": statistics.fmean((a["level"], a["action"]) == (b["level"], b["action"]) for a, b in pairs),
        "level_accuracy_ratio": _ratio(soft["level_accuracy"], text["level_accuracy"]),
        "action_accuracy_ratio": _ratio(soft["action_accuracy"], text["action_accuracy"]),
        **ratio_intervals(text, soft),
        "evaluated_tokens_ratio": _ratio(text["evaluated_tokens_p50"], soft["evaluated_tokens_p50"]),
        "prompt_eval_speedup": _ratio(text["prompt_eval_s_p50"], soft["prompt_eval_s_p50"]),
        "ttft_speedup": _ratio(text["ttft_s_p50"], soft["ttft_s_p50"]),
        "latency_speedup": _ratio(text["latency_s_p50"], soft["latency_s_p50"]),
    }


def ratio_intervals(text: dict, soft: dict, draws: int = 2000, seed: int = 0) -> dict:
    """95 % paired bootstrap intervals of the soft / text accuracy ratios: the same resampled cases for both
    prompts (the labels are noisy, and a few cases move a ratio by 0.05 at this size)."""
    import random

    pairs = list(zip(text["rows"], soft["rows"], strict=True))
    rng = random.Random(seed)
    intervals = {}
    for key in ("level", "action"):
        hits = [(a[key] == a[f"label_{key}"], b[key] == b[f"label_{key}"]) for a, b in pairs]
        ratios = []
        for _ in range(draws):
            sample = rng.choices(hits, k=len(hits))
            text_hits = sum(t for t, _ in sample)
            if text_hits:  # a draw without one right text answer has no ratio (only happens with a few cases)
                ratios.append(sum(s for _, s in sample) / text_hits)
        ratios.sort()
        n = len(ratios)
        intervals[f"{key}_accuracy_ratio_ci95"] = ((ratios[int(0.025 * n)], ratios[int(0.975 * n) - 1]) if ratios
                                                   else (float("nan"), float("nan")))
    return intervals


def feature_use(results: dict) -> dict:
    """Per prompt: llama.cpp accuracy with the case's own features minus with another case's (same rule)."""
    own, other = results["llamacpp"], results["llamacpp, features of another case"]
    return {variant: {"level": own[variant]["level_accuracy"] - other[variant]["level_accuracy"],
                      "action": own[variant]["action_accuracy"] - other[variant]["action_accuracy"]}
            for variant in own}


def verdict(ratios: dict) -> dict:
    accurate = min(ratios["level_accuracy_ratio"], ratios["action_accuracy_ratio"]) >= GOAL_ACCURACY
    return {"accuracy_goal_met": accurate,
            "prompt_eval_goal_met": accurate and ratios["prompt_eval_speedup"] >= GOAL_SPEEDUP,
            "total_latency_goal_met": accurate and ratios["latency_speedup"] >= GOAL_SPEEDUP}


def _interval(bounds) -> str:
    return f"{bounds[0]:.2f}-{bounds[1]:.2f}"


def table(report: dict) -> str:
    lines = ["| backend | prompt | cases | level acc | action acc | = rule decision | LLM answers | tokens evaluated | "
             "prompt eval p50 ms | first decision token p50 ms | latency p50 ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for backend, pair in report["results"].items():
        for r in pair.values():
            lines.append(f"| {backend} | {r['model']} | {r['cases']} | {r['level_accuracy']:.2f} | "
                         f"{r['action_accuracy']:.2f} | {r.get('same_as_rule', float('nan')):.2f} | "
                         f"{r['llm_answers']:.2f} | {r['evaluated_tokens_p50']:.0f} | "
                         f"{1000 * r['prompt_eval_s_p50']:.0f} | {1000 * r['ttft_s_p50']:.0f} | "
                         f"{1000 * r['latency_s_p50']:.0f} |")
    first = next(iter(next(iter(report["results"].values())).values()))
    if "rule_level_accuracy" in first:
        lines.append(f"| (rule decision copied) | | {first['cases']} | {first['rule_level_accuracy']:.2f} | "
                     f"{first['rule_action_accuracy']:.2f} | 1.00 | | | | | |")
    bound = report.get("feature_classifier")
    if bound:
        lines.append(f"| (logistic regression on features + rule, same rows) | | {first['cases']} | "
                     f"{bound['level_accuracy']:.2f} | {bound['action_accuracy']:.2f} | | | | | | |")
    lines.append("")
    for backend, ratios in report["ratios"].items():
        lines.append(f"{backend}: same decision as text {ratios.get('same_decisions', float('nan')):.2f}; "
                     f"soft/text accuracy level {ratios['level_accuracy_ratio']:.2f} "
                     f"(95 % CI {_interval(ratios['level_accuracy_ratio_ci95'])}), action "
                     f"{ratios['action_accuracy_ratio']:.2f} "
                     f"(95 % CI {_interval(ratios['action_accuracy_ratio_ci95'])}); text/soft tokens evaluated "
                     f"{ratios['evaluated_tokens_ratio']:.1f}x, prompt eval {ratios['prompt_eval_speedup']:.2f}x, "
                     f"first decision token {ratios['ttft_speedup']:.2f}x, latency {ratios['latency_speedup']:.2f}x")
    for variant, drop in report.get("feature_use", {}).items():
        lines.append(f"{variant}: accuracy lost with another case's features (llama.cpp): level {drop['level']:+.2f}, "
                     f"action {drop['action']:+.2f}")
    lines.append(f"goal (llama.cpp): {report['goal']}")
    tiny = report.get("tinyllama")
    if tiny:
        lines += ["", "| TinyLlama-1.1B shape, Q4_0, llama.cpp | cases | tokens evaluated | prompt eval p50 ms | "
                  "first decision token p50 ms | latency p50 ms | message tokens p50 |",
                  "|---|---|---|---|---|---|---|"]
        for variant in ("text", "soft"):
            r = tiny[variant]
            lines.append(f"| {variant} prompt | {r['cases']} | {r['evaluated_tokens_p50']:.0f} | "
                         f"{1000 * r['prompt_eval_s_p50']:.0f} | {1000 * r['ttft_s_p50']:.0f} | "
                         f"{1000 * r['latency_s_p50']:.0f} | {r['message_tokens_p50']:.0f} |")
        lines.append(f"TinyLlama shape: text/soft prompt eval {tiny['prompt_eval_speedup']:.2f}x, first decision "
                     f"token {tiny['ttft_speedup']:.2f}x, latency {tiny['latency_speedup']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=400, help="generated training rows")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    parser.add_argument("--batch", type=int, default=8, help="examples per step")
    parser.add_argument("--cases", type=int, default=40, help="held-out cases evaluated with llama.cpp")
    parser.add_argument("--reference-cases", type=int, default=8, help="of those, evaluated with transformers")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-soft-prompt")
    parser.add_argument("--reuse", action="store_true", help="keep trained runs found in --work")
    parser.add_argument("--tinyllama-cases", type=int, default=10,
                        help="of the held-out cases, timed on the TinyLlama shape too (0: skip)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the random TinyLlama lives")
    args = parser.parse_args(argv)

    from fatigue_llm.llm.config import LlmConfig
    from fatigue_llm.training.config import load_run_config
    from fatigue_llm.training.export import export_lora_gguf

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    train_csv, held_csv = write_data(work, args.rows, args.cases)
    training, ggufs = {}, {}
    for variant in ("text", "soft"):
        config_path = run_config(work, variant, train_csv, args)
        training[variant] = train_variant(config_path, args.reuse)
        print(f"[bench] trained {variant}: {training[variant]}", flush=True)
        ggufs[variant] = export_lora_gguf(work / variant, work / variant / "adapter.lora.gguf")["lora_gguf"]
    n_tokens = load_run_config(work / "soft.yaml").projector.n_tokens
    cases = held_out(held_csv, args.cases)
    common = dict(retrieval_k=0, generation_deadline=120.0, n_threads=args.threads, prefix_tokens=n_tokens)
    llama = {variant: LlmConfig(backend="llamacpp", lora_path=ggufs[variant], **common) for variant in ggufs}
    reference = {variant: LlmConfig(backend="transformers", lora_path=str(work / variant / "adapter"), **common)
                 for variant in ggufs}
    results: dict[str, dict] = {"llamacpp": evaluate(llama, cases, prompt_timing=True)}
    print("[bench] llama.cpp done", flush=True)
    results["transformers"] = evaluate(reference, cases[:args.reference_cases], prompt_timing=False)
    print("[bench] transformers done", flush=True)
    # the ablation: does the model use the features at all?
    results["llamacpp, features of another case"] = evaluate(llama, cases, prompt_timing=False,
                                                             shift_features=len(cases) // 2)
    for pair in results.values():
        assert not pair["text"]["soft_prompt"] and pair["soft"]["soft_prompt"], "soft prompt on/off as intended"
    ratios = {backend: compare(pair["text"], pair["soft"]) for backend, pair in results.items()}
    tiny = (tinyllama_latency(cases[:args.tinyllama_cases], n_tokens, args.threads, work, args.cache_dir)
            if args.tinyllama_cases > 0 else None)
    report = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "load_avg": os.getloadavg()},
              "args": {k: str(v) for k, v in vars(args).items()}, "training": training, "results": results,
              "ratios": ratios, "goal": verdict(ratios["llamacpp"]), "feature_use": feature_use(results),
              "tinyllama": tiny, "feature_classifier": feature_classifier(args.rows, cases),
              "time": time.time()}
    print(table(report))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
