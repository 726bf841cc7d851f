"""``fatigue-llm export RUN_DIR --onnx DIR``: a fine-tuned run -> a verified ONNX folder for onnxruntime.

    merge     the run's LoRA adapter into the FLOAT base (``export.merge``, as for the GGUF) into a temporary
              safetensors folder;
    export    that folder with ``.venv-onnx/bin/python -m fatigue_llm.training.export_onnx`` (a subprocess: the
              ``onnx`` package needs protobuf >= 6, this env pins < 5; ``make onnx-env`` creates that env);
    verify    the ONNX model with onnxruntime (the llm node's ``backend: onnxruntime``) against the merged model
              (transformers, float32): teacher-forced logit difference and greedy agreement over ``VERIFY_PROMPTS``,
              and ``DECODE_TOKENS`` greedy tokens decoded step by step with the KV cache on both sides. The report
              goes to ``DIR/verify.json``.

The model is only put at DIR (written beside it, then renamed) when both agreements reach ``min_agreement``
(default ``MIN_AGREEMENT``) and the largest logit difference stays under ``MAX_LOGIT_DIFF``; otherwise DIR keeps
what it held and only its ``verify.json`` says why (``passed: false``; the onnxruntime backend refuses such a DIR).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from fatigue_llm.intervention.convert import VERIFY_PROMPTS

REPO = Path(__file__).resolve().parents[2]
ONNX_PYTHON_ENV = "FATIGUE_LLM_ONNX_PYTHON"  # overrides the export interpreter (default REPO/.venv-onnx/bin/python)
MIN_AGREEMENT = 0.99   # float32 both sides: SmolLM2-135M reaches 1.00 (a broken graph or cache: far below)
MAX_LOGIT_DIFF = 0.05  # float32, 30 layers: measured ~1e-4 on SmolLM2-135M
DECODE_TOKENS = 16
REPORT = "verify.json"
EXPORT_TIMEOUT_S = 1800


def onnx_python() -> Path:
    """The interpreter of the ONNX export environment."""
    configured = os.environ.get(ONNX_PYTHON_ENV)
    return Path(configured) if configured else REPO / ".venv-onnx" / "bin" / "python"


def _export_error(message: str):
    from fatigue_llm.training.export import ExportError

    return ExportError(message)


def require_onnx_python() -> Path:
    """The export interpreter; ExportError naming ``make onnx-env`` when it is missing."""
    python = onnx_python()
    if not python.is_file():
        raise _export_error(f"{python}: the ONNX export environment is missing: create it with `make onnx-env` "
                            f"(the onnx package needs protobuf>=6, which this environment cannot take)")
    return python


def run_onnx_export(merged_dir: Path, out_dir: Path, n_threads: int = 2) -> dict:
    """Run ``export_onnx`` in the ONNX environment; its manifest. Raises ExportError with its message."""
    python = require_onnx_python()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    command = [str(python), "-m", "fatigue_llm.training.export_onnx", str(merged_dir), str(out_dir),
               "--threads", str(n_threads)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=EXPORT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise _export_error(f"the ONNX export of {merged_dir} took over {EXPORT_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        message = next((line[len("error: "):] for line in reversed(lines) if line.startswith("error: ")), None)
        detail = message or "\n".join(lines[-15:])
        raise _export_error(f"the ONNX export ({python} -m fatigue_llm.training.export_onnx) failed: {detail}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise _export_error(f"the ONNX export printed no manifest: {done.stdout[-500:]!r}") from None


def _torch_greedy(model, ids: list[int], n: int):
    """(greedy tokens, per-step logits, seconds of the n-1 cached steps) of the transformers model."""
    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), use_cache=True)
        past, logits, tokens, steps = out.past_key_values, out.logits[0, -1].float().numpy(), [], []
        started = 0.0
        for step in range(n):
            token = int(np.argmax(logits))
            tokens.append(token)
            steps.append(logits)
            if step == n - 1:
                break
            if step == 0:
                started = time.perf_counter()
            out = model(input_ids=torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[0, -1].float().numpy()
    return tokens, steps, time.perf_counter() - started


def verify_onnx(onnx_dir: Path, merged_dir: Path, prompts=VERIFY_PROMPTS, decode_tokens: int = DECODE_TOKENS,
                n_threads: int = 2) -> dict:
    """Compare the ONNX folder (onnxruntime) with the merged HF folder (transformers); a report dict."""
    from fatigue_llm.intervention.backends.onnxruntime_backend import OnnxRuntimeBackend
    from fatigue_llm.intervention.backends.transformers_backend import TransformersBackend
    from fatigue_llm.intervention.models import resolve_model

    reference = TransformersBackend(resolve_model(merged_dir), n_threads=n_threads)
    candidate = OnnxRuntimeBackend(onnx_dir, n_threads=n_threads, check_report=False)
    diffs, agree, positions, same_tokens, decode_same, decode_diff = [], 0, 0, 0, 0, 0.0
    ort_s = torch_s = 0.0
    try:
        for prompt in prompts:
            tokens = list(reference.tokenizer(prompt, add_special_tokens=False).input_ids)
            same_tokens += int(candidate.count_tokens(prompt) == len(tokens)
                               and candidate._tokenize(prompt) == tokens)
            ours, theirs = candidate.logits(tokens), reference.logits(tokens)
            if ours.shape != theirs.shape:
                raise _export_error(f"logit shapes differ: onnx {ours.shape} vs merged {theirs.shape}")
            diffs.append(np.abs(ours - theirs).reshape(-1))
            agree += int(np.sum(ours.argmax(-1) == theirs.argmax(-1)))
            positions += len(tokens)
            # free greedy decoding, one token per step through each KV cache
            ours_tokens, ours_steps, seconds = candidate.greedy(tokens, decode_tokens)
            ort_s += seconds
            theirs_tokens, theirs_steps, seconds = _torch_greedy(reference.model, tokens, decode_tokens)
            torch_s += seconds
            for a, b, la, lb in zip(ours_tokens, theirs_tokens, ours_steps, theirs_steps, strict=True):
                decode_diff = max(decode_diff, float(np.abs(la - lb).max()))
                if a != b:
                    break
                decode_same += 1
    finally:
        candidate.close()
        reference.close()
    every = np.concatenate(diffs)
    steps = len(prompts) * max(decode_tokens - 1, 1)
    return {"positions": positions, "max_abs_logit_diff": float(every.max()),
            "mean_abs_logit_diff": float(every.mean()), "greedy_agreement": agree / max(positions, 1),
            "tokenizer_agreement": same_tokens / max(len(prompts), 1),
            "decode_tokens": decode_tokens * len(prompts),
            "decode_agreement": decode_same / max(decode_tokens * len(prompts), 1),
            "decode_max_abs_logit_diff": decode_diff,
            "onnxruntime_decode_tokens_per_s": round(steps / ort_s, 1) if ort_s > 0 else None,
            "transformers_decode_tokens_per_s": round(steps / torch_s, 1) if torch_s > 0 else None}


def _check_target(out_dir: Path) -> None:
    """Refuse to write into a file or a folder that holds something other than an earlier export (or its report)."""
    from fatigue_llm.intervention.backends.onnxruntime_backend import MANIFEST

    if out_dir.is_file():
        raise _export_error(f"{out_dir}: is a file; --onnx takes a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file() \
            and sorted(p.name for p in out_dir.iterdir()) != [REPORT]:
        raise _export_error(f"{out_dir}: exists and is not an ONNX export folder ({MANIFEST}); not replacing it")


def _install(built: Path, out_dir: Path) -> None:
    """Put the verified folder ``built`` at ``out_dir`` (beside it first, then renamed)."""
    _check_target(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.move(str(built), str(tmp))
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def export_onnx_run(run_dir_or_adapter: str | Path, out_dir: Path, base: str | None = None,
                    merged_dir: Path | None = None, min_agreement: float | None = None, n_threads: int = 2,
                    max_logit_diff: float = MAX_LOGIT_DIFF) -> dict:
    """Merge the run's adapter into its float base, export it to ONNX at ``out_dir`` and verify it (see the
    module docstring). Returns the report (also ``out_dir/verify.json``); ``report["passed"]`` is False when the
    check failed (the model is then not put at ``out_dir``). Raises ExportError naming the file or the missing
    environment when an input is wrong."""
    from fatigue_llm.training.export import base_model_path, locate_adapter, merge, refuse_quantized_run

    floor = MIN_AGREEMENT if min_agreement is None else min_agreement
    adapter, run = locate_adapter(run_dir_or_adapter)
    refuse_quantized_run(adapter, run)
    out_dir = Path(out_dir)
    require_onnx_python()  # both before minutes of merging
    _check_target(out_dir)
    base_path = base_model_path(adapter, run) if base is None else base
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    target = Path(merged_dir) if merged_dir is not None else scratch / "merged"
    started = time.monotonic()
    try:
        merge(base_path, adapter, target)
        merged_s = time.monotonic() - started
        manifest = run_onnx_export(target, scratch / "onnx", n_threads)
        exported_s = time.monotonic() - started - merged_s
        check = verify_onnx(scratch / "onnx", target, n_threads=n_threads)
        passed = (min(check["greedy_agreement"], check["decode_agreement"]) >= floor
                  and check["max_abs_logit_diff"] <= max_logit_diff)
        report = {"onnx_dir": str(out_dir), "passed": passed, "verify": check, "min_agreement": floor,
                  "max_logit_diff": max_logit_diff, "adapter": str(adapter),
                  "base": base_path or "(embedded SmolLM2)",
                  "reference": str(target) if merged_dir is not None else "merged float model (removed afterwards)",
                  "manifest": manifest, "merge_seconds": round(merged_s, 1), "export_seconds": round(exported_s, 1),
                  "verify_seconds": round(time.monotonic() - started - merged_s - exported_s, 1),
                  "seconds": round(time.monotonic() - started, 1)}
        if passed:
            (scratch / "onnx" / REPORT).write_text(json.dumps(report, indent=2) + "\n")
            _install(scratch / "onnx", out_dir)
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = out_dir / (REPORT + ".tmp")
            tmp.write_text(json.dumps(report, indent=2) + "\n")
            tmp.replace(out_dir / REPORT)
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
