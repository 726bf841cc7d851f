"""``fatigue-llm train --config RUN.yaml [--set section.key=value ...] [--resume]``: LoRA or full fine-tuning.

The loop is transformers' ``Trainer`` (gradient accumulation, warmup + schedule, checkpoint rotation,
resume with optimizer / scheduler / RNG state, ``EarlyStoppingCallback``, progress bar) around a peft
LoRA model; what is ours is the data (rendered by the engine's prompt code, loss on the answer only)
and the run layout:

    OUTPUT/checkpoint-N/   Trainer checkpoints (the newest ``save_total_limit`` kept)
    OUTPUT/adapter/        the final LoRA adapter (safetensors; ``lora_path`` of the llm node), with
                           projector.safetensors when ``projector.enabled`` (also in OUTPUT/ and in each
                           checkpoint; see ``softprompt.py``)
    OUTPUT/metrics.jsonl   one line per logging / evaluation step
    OUTPUT/run.json        the resolved config, data counts and the final metrics (written atomically)

Exit 0 when trained; 2 with a message naming the file, key, row or value when an input is wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

from fatigue_llm.config import ConfigError
from fatigue_llm.training.config import OPTIMIZERS, RunConfig, load_run_config
from fatigue_llm.training.data import (
    IGNORE_INDEX,
    DataError,
    load_conversations,
    split,
    tokenize_conversation,
)


def engine_prompt_builder(tokenizer, max_message_chars: int, soft_prompt: bool = False, retrieval_k: int = 0):
    """The intervention engine's request for a feature vector: its system prompt, rule decision (the
    deterministic policy without cooldown) and feature rendering, within its user-turn budget; with
    ``soft_prompt`` the feature text is left out (the projector's virtual tokens carry the features).
    With ``retrieval_k`` > 0 the request also holds the k past cases the engine retrieves for these features
    from a fresh case store, seeded as the llm node seeds its own (``retrieval_cases``)."""
    from fatigue_llm.intervention.config import InterventionConfig
    from fatigue_llm.intervention.engine import rule_decision_for
    from fatigue_llm.intervention.prompt import USER_BUDGET_TOKENS, build_messages, system_prompt

    rules, system = InterventionConfig(), system_prompt(max_message_chars)
    retrieve = retrieval_cases(retrieval_k)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    def build(features):
        rule = rule_decision_for(features, rules)
        messages = build_messages(features, rule, retrieve(features), system=system, count_tokens=count,
                                  budget_tokens=USER_BUDGET_TOKENS, soft_prompt=soft_prompt)
        return messages, rule.level.name

    return build


def retrieval_cases(k: int):
    """``features -> retrieved cases`` as the engine's first request sees them: the store the llm node creates
    on its first start (seeded from the engine's seed cases), searched with the engine's key. k = 0: none."""
    if k <= 0:
        return lambda features: []
    import tempfile
    import weakref

    from fatigue_llm.intervention.casestore import CaseStore
    from fatigue_llm.intervention.engine import SEED_CSV
    from fatigue_llm.intervention.projector import FEATURE_NAMES, retrieval_key
    from fatigue_llm.llm.config import LlmConfig

    folder = tempfile.TemporaryDirectory(prefix="fatigue-train-cases-")
    store = CaseStore.open(Path(folder.name), dim=len(FEATURE_NAMES) + 1, hnsw_threshold=LlmConfig().hnsw_threshold)
    store.seed_from_csv(SEED_CSV, embed=retrieval_key)

    def retrieve(features):
        return store.search(retrieval_key(features), k)

    weakref.finalize(retrieve, lambda: (store.close(save=False), folder.cleanup()))
    return retrieve


class ListDataset:
    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def level_weights(levels: list[str]) -> list[float]:
    """Sampling weight per example so that every fatigue level is drawn equally often (1 / its count).
    Examples without a level label (plain chat data) count as one more class."""
    from collections import Counter

    counts = Counter(levels)
    return [1.0 / counts[level] for level in levels]


def _trainer_class(weights: list[float] | None, seed: int):
    """transformers' Trainer, or one whose training sampler draws examples with ``weights`` (with
    replacement, from its own seeded generator, so a resumed run replays the same draws)."""
    from transformers import Trainer

    if weights is None:
        return Trainer

    class BalancedTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            import torch
            from torch.utils.data import WeightedRandomSampler

            generator = torch.Generator().manual_seed(seed)
            return WeightedRandomSampler(weights, num_samples=len(weights), replacement=True, generator=generator)

    return BalancedTrainer


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _metrics_callback(path: Path):
    from transformers import TrainerCallback

    class JsonlMetrics(TrainerCallback):
        """Appends every log (loss, learning rate, eval loss) as one JSON line."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:  # one line per step, not one per process
                with path.open("a") as handle:
                    handle.write(json.dumps({"step": state.global_step, "time": time.time(), **logs}) + "\n")

    return JsonlMetrics()


def build_model(config: RunConfig):
    """(model, tokenizer): the base model with a trainable LoRA adapter (or all weights for full tuning)."""
    from fatigue_llm.intervention.backends.transformers_backend import load_model
    from fatigue_llm.intervention.models import ModelError, is_nf4_checkpoint, resolve_model

    source = resolve_model(config.model.path)
    qlora = config.model.quantization == "nf4"
    if source.kind == "hf" and not qlora and is_nf4_checkpoint(source.path):
        raise ModelError(f"{source.path} is an NF4 checkpoint: set model.quantization: nf4 (QLoRA) to train on it")
    model, tokenizer = load_model(source, quantization="bnb_nf4" if qlora else "none", dtype=config.model.dtype)
    if source.kind == "gguf":
        _forget_gguf_quantization(model)
    if tokenizer.pad_token_id is None:
        # padding only: labels are built by us (answer + end-of-turn), so the EOS is never masked
        tokenizer.pad_token = tokenizer.eos_token
    model.train()
    if config.lora.enabled:
        from peft import LoraConfig, get_peft_model

        if qlora:  # frozen, in its own dtype (no float32 upcast), inputs that require grad
            from fatigue_llm.training.lean import prepare_4bit_base

            model = prepare_4bit_base(model)
        lora = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                          target_modules=list(config.lora.target_modules), task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    return model, tokenizer


def _forget_gguf_quantization(model) -> None:
    """transformers dequantizes a GGUF to float weights on load but still marks the model as GGUF-quantized,
    which Trainer refuses; the weights are plain float tensors, so drop the mark."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def prepare_data(config: RunConfig, tokenizer, projector=None) -> tuple[list[dict], list[dict], dict]:
    """(train items, validation items, counts); counts["train_levels"] holds each training item's level.
    With a ``projector`` (``projector.enabled``) the prompts are the engine's soft-prompt mode and each
    item holds the projector's slot and input (``softprompt.encode_soft``)."""
    from fatigue_llm.llm.config import LlmConfig

    build = engine_prompt_builder(tokenizer, LlmConfig().max_message_chars, soft_prompt=projector is not None,
                                  retrieval_k=config.data.retrieval_k)
    conversations = load_conversations(config.resolve(config.data.train), config.data.format, build)
    usable = [c for c in conversations if c.answerable]
    if config.data.validation:
        held_out = load_conversations(config.resolve(config.data.validation), config.data.format, build)
        train, val = usable, [c for c in held_out if c.answerable]
    else:
        train, val = split(usable, config.data.validation_fraction, config.data.seed)
    encode = lambda items: [tokenize_conversation(tokenizer, c, config.training.max_length) for c in items]  # noqa: E731
    if projector is not None or config.training.frozen_prefix:
        from fatigue_llm.training.softprompt import encode_soft, encode_text

        encode = lambda items: [  # noqa: E731
            encode_text(tokenizer, c, config.training.max_length) if projector is None
            else encode_soft(tokenizer, c, config.training.max_length, projector) for c in items]
    counts = {"examples": len(conversations), "unanswerable_skipped": len(conversations) - len(usable),
              "train": len(train), "validation": len(val), "train_levels": [c.level for c in train]}
    return encode(train), encode(val), counts


def train(config: RunConfig, resume: bool = False) -> dict:
    """Fine-tune as ``config`` says; returns the run summary (also written to OUTPUT/run.json)."""
    from transformers import DataCollatorForSeq2Seq, EarlyStoppingCallback, TrainingArguments

    data_path = config.resolve(config.data.train)
    if not data_path.is_file():  # before the model loads: say it at once
        raise DataError(f"{data_path}: cannot read the training data (no such file; data.train in {config.source})")
    out = config.resolve(config.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    from transformers import set_seed

    if config.training.bounded_heap:  # before the model's memory is allocated
        from fatigue_llm.training.lean import bound_heap

        bound_heap()
    set_seed(config.training.seed)  # before the adapter's random init: the same seed, the same run
    model, tokenizer = build_model(config)
    projector = None
    if config.projector.enabled or config.training.frozen_prefix:
        from fatigue_llm.training import softprompt
    if config.projector.enabled:
        p = config.projector
        init_ids = softprompt.init_token_ids(tokenizer, p.n_tokens) if p.init == "text" else None
        projector = softprompt.make_projector(model, p.n_tokens, p.hidden, p.seed, init_ids)
    train_items, val_items, counts = prepare_data(config, tokenizer, projector)
    t = config.training
    levels = counts.pop("train_levels")
    weights = level_weights(levels) if config.data.balance == "sample" else None
    counts["train_per_level"] = {level or "(none)": levels.count(level) for level in sorted(set(levels))}
    evaluate = bool(val_items)
    args = TrainingArguments(
        output_dir=str(out), max_steps=t.max_steps, num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation, learning_rate=t.learning_rate,
        optim=OPTIMIZERS[t.optimizer],
        lr_scheduler_type=t.scheduler, warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay,  # < 1: a ratio
        logging_steps=t.logging_steps, eval_strategy="steps" if evaluate else "no", eval_steps=t.eval_steps,
        save_strategy="steps", save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        load_best_model_at_end=evaluate and t.early_stopping_patience > 0, metric_for_best_model="eval_loss",
        greater_is_better=False, seed=t.seed, data_seed=t.seed, full_determinism=t.deterministic,
        report_to=_report_to(config, out), run_name=out.name,
        gradient_checkpointing=t.gradient_checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False},
        use_cpu=not _cuda(), bf16=config.model.dtype == "bfloat16",
        remove_unused_columns=False, dataloader_num_workers=0, prediction_loss_only=True,
    )
    callbacks = [_metrics_callback(out / "metrics.jsonl")]
    if evaluate and t.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    trainer_class = _trainer_class(weights, t.seed)
    loss_func = None
    if t.answer_logits:
        from fatigue_llm.training import lean

        trainer_class, loss_func = lean.answer_logits_trainer(trainer_class), lean.answer_loss
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    if projector is not None or t.frozen_prefix:
        trainer_class = softprompt.prompt_trainer(trainer_class, projector, config.projector.learning_rate,
                                                  t.frozen_prefix)
        collate = softprompt.collator(collate)
    if projector is not None:
        callbacks.append(softprompt.checkpoint_callback(projector))
    trainer = trainer_class(model=model, args=args, train_dataset=ListDataset(train_items),
                      eval_dataset=ListDataset(val_items) if evaluate else None,
                      data_collator=collate, compute_loss_func=loss_func,
                      callbacks=callbacks)
    checkpoint = _last_checkpoint(out) if resume else None
    if projector is not None and checkpoint is not None:  # the adapter, optimizer and RNG come from Trainer
        softprompt.load_weights(projector, Path(checkpoint) / softprompt.PROJECTOR_FILE)
    before = trainer.evaluate()["eval_loss"] if evaluate and checkpoint is None else None
    result = trainer.train(resume_from_checkpoint=checkpoint)
    final = {"train_loss": result.training_loss, "steps": result.global_step}
    if evaluate:
        eval_loss = trainer.evaluate()["eval_loss"]
        final.update(eval_loss=eval_loss, eval_perplexity=math.exp(min(eval_loss, 50.0)))
        if before is not None:
            final.update(eval_loss_before=before, eval_perplexity_before=math.exp(min(before, 50.0)))
    adapter = out / ("adapter" if config.lora.enabled else "model")
    summary = {"config": dataclasses.asdict(config), "data": counts, "final": final, "saved": str(adapter),
               "processes": args.world_size}
    if trainer.is_world_process_zero():  # under `accelerate launch` every process holds the same weights
        trainer.model.save_pretrained(str(adapter), safe_serialization=True)
        tokenizer.save_pretrained(str(adapter))
        if projector is not None:
            # load_best_model_at_end restored that checkpoint's adapter: its projector too
            best = trainer.state.best_model_checkpoint
            if best and args.load_best_model_at_end and (Path(best) / softprompt.PROJECTOR_FILE).is_file():
                softprompt.load_weights(projector, Path(best) / softprompt.PROJECTOR_FILE)
            for folder in (out, adapter):  # beside the adapter: where the engine (lora_path) and export look
                projector.save(folder / softprompt.PROJECTOR_FILE)
        _atomic_write(out / "run.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _report_to(config: RunConfig, out: Path) -> list[str]:
    """Trainer's loggers besides our metrics.jsonl: W&B in offline mode when output.wandb says so."""
    if config.output.wandb == "none":
        return []
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise DataError(f"{config.source}: output.wandb is {config.output.wandb!r} but the wandb package is not "
                        "installed (pip install -r requirements-llm.txt)") from None
    # environment, because that is how transformers' WandbCallback is configured; offline means nothing is sent
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_DIR"] = str(out)
    os.environ["WANDB_PROJECT"] = config.output.wandb_project
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")  # no crash reports to wandb's Sentry either
    os.environ.setdefault("WANDB_SILENT", "true")
    return ["wandb"]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _last_checkpoint(out: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(out))


def _other_mode(config: RunConfig, args: argparse.Namespace) -> int:
    from fatigue_llm.training.evaluate import generate_one, run_evaluation, table

    if args.mode == "generate":
        if args.features is None:
            raise DataError("--mode generate needs --features FEATURES.json")
        print(json.dumps(generate_one(config, args.features)))
        return 0
    print(table(run_evaluation(config, compare=args.mode == "compare", limit=args.limit)))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fatigue-llm train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="run config YAML (configs/*.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config key, e.g. training.learning_rate=1e-4 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output.dir")
    parser.add_argument("--mode", choices=("train", "evaluate", "compare", "generate"), default="train",
                        help="train (default); evaluate the run's adapter through the engine on held-out cases; "
                             "compare it with the base model; generate one intervention for --features")
    parser.add_argument("--features", type=Path, help="features JSON file (--mode generate)")
    parser.add_argument("--limit", type=int, default=20, help="held-out cases to evaluate (default 20)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fatigue_llm.intervention.models import ModelError

    try:
        config = load_run_config(args.config, args.set)
        if args.mode != "train":
            return _other_mode(config, args)
        summary = train(config, resume=args.resume)
    except (ConfigError, DataError, ModelError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    final = summary["final"]
    before = (f" (before: {final['eval_loss_before']:.4f}, perplexity {final['eval_perplexity_before']:.2f})"
              if "eval_loss_before" in final else "")
    print(f"trained {final['steps']} steps: train loss {final['train_loss']:.4f}"
          + (f", eval loss {final['eval_loss']:.4f} (perplexity {final['eval_perplexity']:.2f}){before}"
             if "eval_loss" in final else "") + f"; saved {summary['saved']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
