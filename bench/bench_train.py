"""Fine-tuning benchmark: LoRA, QLoRA and full tuning through the project's own training pipeline, on CPU.

Per configuration, each in its own subprocess (so its peak RSS is that process's own): seconds per optimizer
step, training tokens/s (non-padding input tokens processed per second) and peak RSS, for

1. LoRA on the embedded SmolLM2-135M (``configs/smollm2_lora.yaml``: float32, r 8, attention projections);
2. LoRA on the TinyLlama-1.1B shape (``configs/tinyllama_lora.yaml``: bfloat16 weights, r 16, all linear
   projections, gradient checkpointing);
3. QLoRA on the TinyLlama shape (``configs/tinyllama_qlora.yaml``: the frozen base in bitsandbytes NF4 on
   the CPU, bfloat16 compute, the same adapter) three times: as shipped, from the NF4 checkpoint
   ``fatigue-llm model quantize-nf4`` writes (cached beside the random model) with the bounded heap and 8-bit
   AdamW; the same with float32 AdamW (``tinyllama_qlora_adamw``); and from the float checkpoint quantized
   at load with glibc's default heap and float32 AdamW (``tinyllama_qlora_at_load``);
4. full fine-tuning on the TinyLlama shape (``configs/tinyllama_full.yaml``: bfloat16 weights, gradients and
   AdamW state, gradient checkpointing), skipped with a note when /proc/meminfo MemAvailable is below its
   estimate (float32 would need ~18 GB for weights + gradients + AdamW alone).

The TinyLlama shape is the random-weight model ``bench_llm.py`` caches (``make_random_llama``, in
``--cache-dir``; written once if missing): same speed and memory as the real model, meaningless loss.

Each run is the project's pipeline: the shipped run config with only what a benchmark needs changed
(``max_steps`` = warm-up + ``--steps``, batch 1, gradient accumulation 1, ``max_length`` 1024, logging every
step, no validation split, ``save_steps`` out of reach; data: the bundled seed cases CSV) written as YAML to a
temp dir and passed to ``fatigue_llm.training.train.train(load_run_config(...))``. A TrainerCallback in the
subprocess (wrapped around the pipeline's metrics callback) times each optimizer step from
``on_step_begin`` to ``on_step_end`` and counts the tokens the model's forward sees; the first
``--warmup`` steps are not counted. Peak RSS is VmHWM: the process peak (model load, training, the final
checkpoint + adapter save Trainer and the pipeline do at the end) and, separately, the peak over the timed
training steps alone (VmHWM reset through /proc/self/clear_refs when training begins).

    .venv/bin/python bench/bench_train.py [--quick] [--steps 3] [--warmup 1] [--threads 2] [--set K=V ...]

--quick runs SmolLM2 LoRA and TinyLlama QLoRA (NF4 checkpoint) only. Prints a markdown table and the JSON, and writes
bench/results/train.json. The parent stops a run (and says so) when MemAvailable falls below 0.75 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench_llm import DEFAULT_CACHE  # the same cached random TinyLlama folder

os.environ["HF_HUB_OFFLINE"] = "1"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results" / "train.json"
SEED_CSV = REPO / "fatigue_llm" / "intervention" / "data" / "seed_cases.csv"
TINYLLAMA_PARAMS = 1.1e9
MIN_AVAILABLE_GIB = 0.75   # the parent stops a run below this much MemAvailable (shared machine)
GIB = 1024 ** 3
# anchors of the source documents (TinyLlama QLoRA) and the target of this benchmark
ANCHOR_QLORA_TRAIN_GB = 1.62
ANCHOR_QLORA_INFER_GB = 1.03
REQUIRED_TRAIN_GB = 8.0
TARGET_QLORA_TRAIN_GB = 1.6


# --- worker: one training run in its own process --------------------------------------------------------

def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False when not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class _Probe:
    """What the callback records: per-step times and tokens, RSS at the training boundaries."""

    def __init__(self) -> None:
        self.steps: list[dict] = []
        self.tokens = 0        # non-padding input tokens seen by the model's forward
        self.labelled = 0      # tokens with a loss (the answers)
        self.step_start = 0.0
        self.step_tokens = (0, 0)
        self.train_begin = 0.0
        self.last_step_end = 0.0
        self.rss_train_begin_kib = 0
        self.rss_split_train_begin_kib = (0, 0)  # (anonymous, file-backed) when training begins
        self.rss_split_last_step_kib = (0, 0)    # ... and at the end of the last step
        self.hwm_before_train_kib = 0
        self.hwm_train_kib = 0
        self.reset_ok = False

    def hook(self, module, args, kwargs):
        if not module.training:
            return
        mask, ids, labels = kwargs.get("attention_mask"), kwargs.get("input_ids"), kwargs.get("labels")
        if mask is not None:
            self.tokens += int(mask.sum())
        elif ids is not None:
            self.tokens += int(ids.numel())
        if labels is not None:
            self.labelled += int((labels != -100).sum())

    def counting_loss(self, loss_func):
        """``training.answer_logits``: the labels go to the loss function, not the model."""
        def loss(outputs, labels, num_items_in_batch=None):
            if outputs.logits.requires_grad:  # training, not evaluation
                self.labelled += int((labels != -100).sum())
            return loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        return loss


def _probed_factory(original, probe: _Probe):
    """The pipeline's metrics-callback factory, its callback extended with the probe's timing."""

    def factory(path):
        inner = original(path)

        class Probed(type(inner)):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                probe.rss_train_begin_kib = _status_kib("VmRSS")
                probe.rss_split_train_begin_kib = (_status_kib("RssAnon"), _status_kib("RssFile"))
                probe.hwm_before_train_kib = _status_kib("VmHWM")
                probe.reset_ok = _reset_peak_rss()
                if model is not None:
                    model.register_forward_pre_hook(probe.hook, with_kwargs=True)
                probe.train_begin = time.perf_counter()
                return super().on_train_begin(args, state, control, model=model, **kwargs)

            def on_step_begin(self, args, state, control, **kwargs):
                probe.step_tokens = (probe.tokens, probe.labelled)
                probe.step_start = time.perf_counter()
                return super().on_step_begin(args, state, control, **kwargs)

            def on_step_end(self, args, state, control, **kwargs):
                now = time.perf_counter()
                probe.steps.append({"step": state.global_step, "s": now - probe.step_start,
                                    "tokens": probe.tokens - probe.step_tokens[0],
                                    "labelled": probe.labelled - probe.step_tokens[1]})
                if state.global_step >= state.max_steps:  # before the final checkpoint is written
                    probe.hwm_train_kib = _status_kib("VmHWM")
                    probe.rss_split_last_step_kib = (_status_kib("RssAnon"), _status_kib("RssFile"))
                probe.last_step_end = now
                return super().on_step_end(args, state, control, **kwargs)

        return Probed()

    return factory


def _metrics_step_times(path: Path, warmup: int) -> list[float]:
    """Step times from metrics.jsonl (logging every step): differences of the logs' wall-clock 'time'."""
    if not path.is_file():
        return []
    logs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    times = {log["step"]: log["time"] for log in logs if "loss" in log}
    return [times[s] - times[s - 1] for s in sorted(times) if s > warmup and s - 1 in times]


def measure(spec: dict) -> dict:
    """Train as the run config says and time its steps (runs in the worker process)."""
    started = time.perf_counter()
    import torch

    torch.set_num_threads(spec["threads"])
    import peft  # noqa: F401  (imported here so the baseline RSS includes the training stack)
    import transformers  # noqa: F401

    from fatigue_llm.intervention.models import is_nf4_checkpoint
    from fatigue_llm.training import lean
    from fatigue_llm.training import train as train_module
    from fatigue_llm.training.config import load_run_config

    baseline_kib = _status_kib("VmRSS")
    probe = _Probe()
    train_module._metrics_callback = _probed_factory(train_module._metrics_callback, probe)
    lean.answer_loss = probe.counting_loss(lean.answer_loss)
    config = load_run_config(spec["config"], spec["overrides"])
    train_start = time.perf_counter()
    summary = train_module.train(config)
    done = time.perf_counter()
    warmup = spec["warmup"]
    timed = [s for s in probe.steps if s["step"] > warmup]
    seconds = sum(s["s"] for s in timed)
    tokens = sum(s["tokens"] for s in timed)
    hwm_end_kib = _status_kib("VmHWM")
    out = config.resolve(config.output.dir)
    losses = [json.loads(line).get("loss") for line in (out / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    return {
        "dtype": config.model.dtype, "quantization": config.model.quantization, "lora": config.lora.enabled,
        "lora_r": config.lora.r if config.lora.enabled else None,
        "target_modules": list(config.lora.target_modules) if config.lora.enabled else None,
        "gradient_checkpointing": config.training.gradient_checkpointing, "data": summary["data"],
        "bounded_heap": config.training.bounded_heap, "answer_logits": config.training.answer_logits,
        "optimizer": config.training.optimizer,
        "nf4_checkpoint": is_nf4_checkpoint(Path(config.resolve(config.model.path))) if config.model.path else False,
        "steps_total": len(probe.steps), "steps_timed": len(timed),
        "s_per_step": seconds / len(timed) if timed else None,
        "s_per_step_median": statistics.median(s["s"] for s in timed) if timed else None,
        "tokens_per_step": tokens / len(timed) if timed else None,
        "train_tok_s": tokens / seconds if seconds else None,
        "labelled_tokens_per_step": sum(s["labelled"] for s in timed) / len(timed) if timed else None,
        "s_per_step_from_metrics": (statistics.mean(_metrics_step_times(out / "metrics.jsonl", warmup))
                                    if _metrics_step_times(out / "metrics.jsonl", warmup) else None),
        "steps": probe.steps, "losses": losses,
        "setup_s": probe.train_begin - train_start,  # model load, data, Trainer (from train() to training)
        "final_save_s": done - probe.last_step_end,  # the end-of-training checkpoint and the adapter / model
        "worker_s": done - started,
        "baseline_rss_mib": baseline_kib / 1024, "rss_after_load_mib": probe.rss_train_begin_kib / 1024,
        "rss_anon_file_after_load_mib": [kib / 1024 for kib in probe.rss_split_train_begin_kib],
        "rss_anon_file_last_step_mib": [kib / 1024 for kib in probe.rss_split_last_step_kib],
        "peak_rss_load_mib": probe.hwm_before_train_kib / 1024,
        "peak_rss_train_mib": probe.hwm_train_kib / 1024 if probe.reset_ok else None,
        "peak_rss_mib": max(probe.hwm_before_train_kib, hwm_end_kib) / 1024,
        "peak_rss_mib_ru_maxrss_end": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "hwm_reset": probe.reset_ok, "torch_threads": torch.get_num_threads(),
    }


# --- parent: plan, memory checks, one subprocess per configuration ------------------------------------------

def mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / GIB
    return float("nan")


def _process_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_worker(spec: dict, log: Path, timeout_s: float) -> dict:
    """Run one configuration in a fresh interpreter, watching the machine's free memory; errors are returned."""
    result_path = log.with_suffix(".result.json")
    command = [sys.executable, __file__, "--worker", json.dumps({**spec, "result": str(result_path)})]
    started = time.perf_counter()
    sampled_peak, stopped = 0.0, ""
    with log.open("w") as handle:
        child = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        while child.poll() is None:
            sampled_peak = max(sampled_peak, _process_rss_mib(child.pid))
            if time.perf_counter() - started > timeout_s:
                stopped = f"timed out after {timeout_s:.0f} s"
            elif mem_available_gib() < MIN_AVAILABLE_GIB:
                stopped = (f"stopped: MemAvailable fell below {MIN_AVAILABLE_GIB} GiB (worker RSS "
                           f"{sampled_peak:.0f} MiB)")
            if stopped:
                child.kill()
                child.wait()
                break
            time.sleep(0.5)
    wall = time.perf_counter() - started
    if stopped:
        return {"error": stopped, "wall_s": wall, "sampled_peak_rss_mib": sampled_peak}
    if child.returncode != 0 or not result_path.is_file():
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        return {"error": (lines or ["no output"])[-1][:300], "wall_s": wall, "returncode": child.returncode}
    return {**json.loads(result_path.read_text()), "wall_s": wall, "sampled_peak_rss_mib": sampled_peak}


def _estimate_gib(key: str, dtype: str) -> float:
    """A generous RSS estimate for the free-memory check (full tuning: weights + gradients + 2 AdamW states)."""
    bytes_per = 4 if dtype == "float32" else 2
    return {"smollm2_lora": 2.0, "tinyllama_lora": 1.5 + TINYLLAMA_PARAMS * bytes_per * 1.5 / GIB,
            "tinyllama_qlora": 3.0, "tinyllama_qlora_adamw": 3.0, "tinyllama_qlora_at_load": 5.0,
            "tinyllama_full": 2.0 + TINYLLAMA_PARAMS * bytes_per * 4 / GIB}[key]


def plan(hf_dir: Path, nf4_dir: Path, quick: bool) -> list[tuple[str, str, Path, str, list[str]]]:
    """(key, label, base run config, model path, run-config overrides) of every configuration."""
    configs = REPO / "configs"
    runs = [
        ("smollm2_lora", "SmolLM2-135M LoRA", configs / "smollm2_lora.yaml", "", []),
        ("tinyllama_lora", "TinyLlama-1.1B LoRA", configs / "tinyllama_lora.yaml", str(hf_dir), []),
        # the QLoRA config before lean.py: the float checkpoint quantized at load, glibc's default heap,
        # float32 AdamW moments
        ("tinyllama_qlora_at_load", "TinyLlama-1.1B QLoRA, quantized at load", configs / "tinyllama_qlora.yaml",
         str(hf_dir), ["training.bounded_heap=false", "training.optimizer=adamw"]),
        # as shipped but with float32 AdamW moments: what the 8-bit optimizer saves
        ("tinyllama_qlora_adamw", "TinyLlama-1.1B QLoRA (NF4 checkpoint), float32 AdamW",
         configs / "tinyllama_qlora.yaml", str(nf4_dir), ["training.optimizer=adamw"]),
        # as shipped: the NF4 checkpoint of `fatigue-llm model quantize-nf4`, bounded heap, 8-bit AdamW
        ("tinyllama_qlora", "TinyLlama-1.1B QLoRA (NF4 checkpoint)", configs / "tinyllama_qlora.yaml",
         str(nf4_dir), []),
        ("tinyllama_full", "TinyLlama-1.1B full fine-tuning", configs / "tinyllama_full.yaml", str(hf_dir), []),
    ]
    return [run for run in runs if not quick or run[0] in ("smollm2_lora", "tinyllama_qlora")]


def write_run_config(base: Path, model_path: str, steps: int, folder: Path) -> Path:
    """The shipped run config with only what the benchmark needs changed, as YAML in ``folder``."""
    data = yaml.safe_load(base.read_text())
    data["model"]["path"] = model_path
    data["training"].update(max_steps=steps, batch_size=1, gradient_accumulation=1, max_length=1024,
                            logging_steps=1, eval_steps=100_000, save_steps=100_000, save_total_limit=1,
                            early_stopping_patience=0)
    data["data"].update(train=str(SEED_CSV), validation_fraction=0.0)
    data["output"] = {"dir": str(folder / "run")}
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _override(overrides: list[str], key: str, default: str) -> str:
    values = [o.partition("=")[2] for o in overrides if o.partition("=")[0] == key]
    return values[-1] if values else default


def _describe(r: dict) -> str:
    nf4 = " weights, NF4 base" + (" (NF4 checkpoint)" if r.get("nf4_checkpoint") else " (quantized at load)")
    parts = [r["dtype"] + (nf4 if r["quantization"] == "nf4" else " weights")]
    parts.append(f"r {r['lora_r']}, {len(r['target_modules'])} modules" if r["lora"] else "all weights")
    if r["gradient_checkpointing"]:
        parts.append("grad. checkpointing")
    if r.get("bounded_heap"):
        parts.append("bounded heap")
    if r.get("optimizer") == "adamw_8bit":
        parts.append("8-bit AdamW")
    return ", ".join(parts)


def markdown(results: list[dict]) -> str:
    rows = ["| configuration | weights / adapter | s/step | train tok/s | tokens/step | peak RSS MiB (process) | "
            "peak RSS MiB (training steps) | RSS after load MiB | load + data s | final save s |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for item in results:
        r = item["result"]
        if "error" in r or "skipped" in r:
            note = r.get("skipped") or f"error: {r['error'][:140]}"
            rows.append(f"| {item['label']} | {note} | | | | | | | | |")
            continue
        train_peak = f"{r['peak_rss_train_mib']:.0f}" if r["peak_rss_train_mib"] else "n/a"
        rows.append(
            f"| {item['label']} | {_describe(r)} | {r['s_per_step']:.2f} | {r['train_tok_s']:.1f} | "
            f"{r['tokens_per_step']:.0f} | {r['peak_rss_mib']:.0f} | {train_peak} | {r['rss_after_load_mib']:.0f} | "
            f"{r['setup_s']:.1f} | {r['final_save_s']:.1f} |")
    return "\n".join(rows)


def _gb(mib: float) -> float:
    return mib * 1024 * 1024 / 1e9


def compare(results: list[dict]) -> tuple[dict, list[str]]:
    """QLoRA / LoRA ratios and the anchors: (numbers, lines of text)."""
    ok = {item["key"]: item["result"] for item in results if "s_per_step" in item["result"]}
    numbers: dict = {"anchors": {"source_qlora_train_gb": ANCHOR_QLORA_TRAIN_GB,
                                 "source_qlora_inference_gb": ANCHOR_QLORA_INFER_GB,
                                 "required_train_gb": REQUIRED_TRAIN_GB,
                                 "target_qlora_train_gb": TARGET_QLORA_TRAIN_GB}}
    lines = []
    qlora, lora = ok.get("tinyllama_qlora"), ok.get("tinyllama_lora")
    if qlora and lora:
        numbers.update(
            qlora_lora_memory_ratio=qlora["peak_rss_mib"] / lora["peak_rss_mib"],
            qlora_lora_train_memory_ratio=(qlora["peak_rss_train_mib"] / lora["peak_rss_train_mib"]
                                           if qlora["peak_rss_train_mib"] and lora["peak_rss_train_mib"] else None),
            qlora_lora_step_ratio=qlora["s_per_step"] / lora["s_per_step"],
            qlora_lora_tok_s_ratio=qlora["train_tok_s"] / lora["train_tok_s"])
        train_ratio = numbers["qlora_lora_train_memory_ratio"]
        lines.append(f"QLoRA / LoRA peak RSS (process): {numbers['qlora_lora_memory_ratio']:.2f}"
                     + (f"; over the training steps: {train_ratio:.2f}" if train_ratio else "")
                     + f". Speed cost QLoRA s/step / LoRA s/step: {numbers['qlora_lora_step_ratio']:.2f} "
                       f"(per token: {1 / numbers['qlora_lora_tok_s_ratio']:.2f}).")
    else:
        lines.append("QLoRA / LoRA ratios: n/a (needs both TinyLlama LoRA and QLoRA; --quick runs QLoRA only)")
    at_load = ok.get("tinyllama_qlora_at_load")
    if qlora and at_load:
        numbers.update(qlora_checkpoint_at_load_memory_ratio=qlora["peak_rss_mib"] / at_load["peak_rss_mib"],
                       qlora_checkpoint_at_load_step_ratio=qlora["s_per_step"] / at_load["s_per_step"])
        lines.append(f"QLoRA as shipped (NF4 checkpoint, bounded heap, 8-bit AdamW) / quantized at load with "
                     f"glibc's default heap and float32 AdamW: peak RSS "
                     f"{numbers['qlora_checkpoint_at_load_memory_ratio']:.2f}, "
                     f"s/step {numbers['qlora_checkpoint_at_load_step_ratio']:.2f}.")
    adamw = ok.get("tinyllama_qlora_adamw")
    if qlora and adamw:
        numbers.update(qlora_8bit_adamw_saved_mib=adamw["peak_rss_mib"] - qlora["peak_rss_mib"],
                       qlora_8bit_adamw_step_ratio=qlora["s_per_step"] / adamw["s_per_step"])
        lines.append(f"8-bit / float32 AdamW moments: {numbers['qlora_8bit_adamw_saved_mib']:.0f} MiB less peak RSS, "
                     f"s/step {numbers['qlora_8bit_adamw_step_ratio']:.2f}.")
    if qlora:
        process_gb, train_gb = _gb(qlora["peak_rss_mib"]), _gb(qlora["peak_rss_train_mib"] or 0.0)
        met = process_gb <= TARGET_QLORA_TRAIN_GB
        numbers.update(qlora_peak_rss_gb=process_gb, qlora_train_peak_rss_gb=train_gb or None,
                       target_met=met,
                       target_met_training_steps=train_gb <= TARGET_QLORA_TRAIN_GB if train_gb else None)
        lines.append(
            f"Target TinyLlama QLoRA training peak RSS <= {TARGET_QLORA_TRAIN_GB} GB (source: "
            f"{ANCHOR_QLORA_TRAIN_GB} GB training, {ANCHOR_QLORA_INFER_GB} GB inference): process peak "
            f"{process_gb:.2f} GB -> {'met' if met else 'NOT met'}; peak over the training steps alone "
            f"{train_gb:.2f} GB -> {'met' if train_gb and train_gb <= TARGET_QLORA_TRAIN_GB else 'NOT met'}. "
            f"The process RSS includes the interpreter + torch/transformers/peft ({qlora['baseline_rss_mib']:.0f} MiB "
            f"before the model loads).")
    fits = {key: _gb(r["peak_rss_mib"]) <= REQUIRED_TRAIN_GB for key, r in ok.items() if key.startswith("tinyllama")}
    if fits:
        numbers["fits_8gb"] = fits
        lines.append(f"Training fits in {REQUIRED_TRAIN_GB:.0f} GB (process peak): "
                     + ", ".join(f"{key} {'yes' if fit else 'NO'} ({_gb(ok[key]['peak_rss_mib']):.2f} GB)"
                                 for key, fit in fits.items()) + ".")
    return numbers, lines


def prepare_model(cache_dir: Path) -> tuple[Path, Path]:
    """The random TinyLlama folder and its NF4 checkpoint (each written once into ``cache_dir``)."""
    # "-dq": with double-quantized block scales, as quantize-nf4 writes them now (an older cache is not used)
    hf_dir, nf4_dir = cache_dir / "tinyllama-1.1b-random", cache_dir / "tinyllama-1.1b-random-nf4-dq"
    if not (hf_dir / "model.safetensors").is_file():
        from fatigue_llm.intervention.models import make_random_llama

        print(f"[bench] writing a random TinyLlama-1.1B-shaped model to {hf_dir} ...", flush=True)
        make_random_llama(hf_dir, "tinyllama", seed=0)
    if not nf4_dir.is_dir():
        print(f"[bench] quantizing it to NF4 in {nf4_dir} (fatigue-llm model quantize-nf4) ...", flush=True)
        subprocess.run([sys.executable, "-m", "fatigue_llm.cli", "model", "quantize-nf4", str(hf_dir),
                        "--out", str(nf4_dir)], check=True, cwd=REPO)
    return hf_dir, nf4_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="SmolLM2 LoRA and TinyLlama QLoRA only")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per configuration (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them (default 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the random TinyLlama lives")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="run-config override applied to every configuration (repeatable)")
    parser.add_argument("--timeout", type=float, default=1500.0, help="seconds per configuration (default 1500)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        Path(spec["result"]).write_text(json.dumps(measure(spec)) + "\n")
        return 0
    started = time.perf_counter()
    hf_dir, nf4_dir = prepare_model(args.cache_dir)
    available_start = mem_available_gib()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for key, label, base, model_path, overrides in plan(hf_dir, nf4_dir, args.quick):
            folder = Path(tmp) / key
            folder.mkdir()
            config = write_run_config(base, model_path, args.warmup + args.steps, folder)
            dtype = _override(args.set, "model.dtype", yaml.safe_load(base.read_text())["model"]["dtype"])
            need, available = _estimate_gib(key, dtype), mem_available_gib()
            load_before = os.getloadavg()[0]
            if need > available - 1.0:
                result = {"skipped": f"skipped: needs ~{need:.1f} GiB ({dtype}), MemAvailable {available:.1f} GiB"}
                print(f"[bench] {label}: {result['skipped']}", flush=True)
            else:
                print(f"[bench] {label} ({args.warmup} + {args.steps} steps; MemAvailable {available:.1f} GiB) ...",
                      flush=True)
                spec = {"config": str(config), "overrides": overrides + args.set, "warmup": args.warmup,
                        "threads": args.threads}
                result = run_worker(spec, folder / "worker.log", args.timeout)
                if "error" in result:
                    print(f"[bench] {label}: {result['error']}", flush=True)
            result.update(load_avg_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)],
                          mem_available_gib_before=round(available, 2), estimate_gib=round(need, 2))
            results.append({"key": key, "label": label, "base_config": str(base.relative_to(REPO)),
                            "overrides": overrides, "result": result})
    table = markdown(results)
    numbers, lines = compare(results)
    report = {
        "mode": "quick" if args.quick else "full", "steps": args.steps, "warmup_steps": args.warmup,
        "threads": args.threads, "overrides": args.set, "data": str(SEED_CSV.relative_to(REPO)),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                    "mem_available_gib_at_start": round(available_start, 2)},
        "note": ("TinyLlama-1.1B has random weights (speed/memory only); batch 1, gradient accumulation 1, "
                 "max_length 1024; peak RSS = VmHWM; timings on a shared machine"),
        "comparison": numbers, "results": results, "markdown": table, "summary": lines,
        "wall_s": time.perf_counter() - started,
    }
    print(table)
    print()
    for line in lines:
        print(f"- {line}")
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[bench] wrote {args.out} in {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
