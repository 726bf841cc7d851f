"""``fatigue-llm export RUN_DIR --out MODEL.gguf [--quant q8_0]``: a fine-tuned run -> a GGUF for the car.

    merge     the run's LoRA adapter (``RUN_DIR/adapter``) into the FLOAT base model (peft
              ``merge_and_unload``) and save a plain HF folder (safetensors + tokenizer), atomically;
    convert   that folder with our GGUF writer (``fatigue_llm.intervention.convert``), then quantize;
    verify    the GGUF (llama.cpp, the llm node's backend) against the merged folder (transformers):
              logit difference and greedy agreement, written to ``MODEL.gguf.json``.

The base is the run's ``model.path`` (``run.json``; "" = the embedded SmolLM2 GGUF, which transformers
dequantizes to float). An adapter trained on a 4-bit base (QLoRA, ``model.quantization: nf4``) is refused:
merging into 4-bit weights is lossy, and into the float base gives a model nobody trained or evaluated.
The GGUF is only put at ``--out`` when its greedy agreement reaches ``--min-agreement`` (default per
quantization, ``MIN_AGREEMENT``). Exit 0 when exported, 1 when the check fails, 2 with a message naming
the file when an input is wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from fatigue_llm.intervention.convert import QUANT_TYPES, ConvertError, convert, verify

# Greedy-agreement floors against the merged float model, with a margin under what the embedded
# SmolLM2-135M reaches (f32 1.00, f16 1.00, q8_0 0.96, q4_0 0.59): they catch a broken conversion
# (a wrong RoPE base gave 0.87 in f32), not the ordinary quantization loss.
MIN_AGREEMENT = {"f32": 0.99, "f16": 0.98, "q8_0": 0.85, "q4_0": 0.5}
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TIED_MODULES = ("lm_head", "embed_tokens")


class ExportError(RuntimeError):
    """A run, adapter or base cannot be exported; the message names the file."""


# --- finding the adapter, its run and its base ----------------------------------------------------------

def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ExportError(f"{path}: cannot read it as JSON ({error})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object")
    return data


def locate_adapter(run_dir_or_adapter: str | Path) -> tuple[Path, dict | None]:
    """(adapter folder, run.json summary or None) for a training run folder or an adapter folder.

    Raises ExportError naming the missing or unreadable file."""
    source = Path(run_dir_or_adapter)
    if not source.is_dir():
        raise ExportError(f"{source}: no such folder (a training run folder or its adapter/ folder)")
    adapter = source if (source / ADAPTER_CONFIG).is_file() else source / "adapter"
    if not (adapter / ADAPTER_CONFIG).is_file():
        if (source / "model" / "config.json").is_file():  # lora.enabled: false saves the whole model
            raise ExportError(f"{source / 'model'} is a fully tuned model, not an adapter: "
                              f"convert it with `fatigue-llm model convert {source / 'model'} --out X.gguf`")
        raise ExportError(f"{adapter / ADAPTER_CONFIG}: no LoRA adapter here (run `fatigue-llm train` first)")
    if not (adapter / ADAPTER_WEIGHTS).is_file():
        raise ExportError(f"{adapter / ADAPTER_WEIGHTS}: missing (only safetensors adapters are loaded)")
    run_json = adapter.parent / "run.json"
    return adapter, (_read_json(run_json) if run_json.is_file() else None)


def _run_model_section(run: dict | None, adapter: Path) -> dict:
    if run is None:
        return {}
    model = run.get("config", {}).get("model")
    if not isinstance(model, dict):
        raise ExportError(f"{adapter.parent / 'run.json'}: no config.model section")
    return model


def base_model_path(adapter: Path, run: dict | None) -> str:
    """The base the adapter was trained on: run.json's ``model.path`` (relative to the run config, as the
    trainer resolves it, else as given), or without a run.json the adapter's ``base_model_name_or_path``."""
    if run is None:
        return str(_read_json(adapter / ADAPTER_CONFIG).get("base_model_name_or_path") or "")
    path = str(_run_model_section(run, adapter).get("path") or "")
    source = str(run.get("config", {}).get("source") or "")
    if path and not Path(path).is_absolute() and source and not source.startswith("<"):
        beside_config = Path(source).parent / path
        if beside_config.exists():
            return str(beside_config)
    return path


def refuse_quantized_run(adapter: Path, run: dict | None) -> None:
    """Raise ExportError when the run trained its adapter on a quantized (QLoRA) base.

    peft's adapter_config.json does not record the base's quantization, so run.json is the marker."""
    quantization = str(_run_model_section(run, adapter).get("quantization") or "none")
    if quantization != "none":
        raise ExportError(
            f"{adapter.parent / 'run.json'}: the adapter was trained on a {quantization} (QLoRA) base; export "
            f"merges into float weights only (merging into 4-bit weights is lossy, and into the float base gives "
            f"a model that was never trained or evaluated): train with model.quantization: none")


def _refuse_quantized_base(source) -> None:
    """A base folder saved already quantized (bitsandbytes, GPTQ...) loads as quantized layers."""
    config = source.path / "config.json"
    if source.kind == "hf" and "quantization_config" in _read_json(config):
        raise ExportError(f"{config}: the base model is quantized (quantization_config); merge needs float weights")


def _touches_tied_weights(adapter_config: dict) -> bool:
    """True when the adapter changes lm_head or embed_tokens, which a tied model shares: merging into one
    would change the other too (and the saved folder keeps only the embeddings)."""
    targets = adapter_config.get("target_modules") or []
    names = [targets] if isinstance(targets, str) else list(targets)
    names += list(adapter_config.get("modules_to_save") or [])
    return any(tied in str(name) for name in names for tied in TIED_MODULES)


# --- merge ---------------------------------------------------------------------------------------------

def _load_float_base(base_path: str):
    """(model, tokenizer, source) of the base in float32, never quantized."""
    from fatigue_llm.intervention.backends.transformers_backend import load_model
    from fatigue_llm.intervention.models import ModelError, resolve_model
    from fatigue_llm.training.train import _forget_gguf_quantization

    try:
        source = resolve_model(base_path)
        _refuse_quantized_base(source)
        model, tokenizer = load_model(source, quantization="none", dtype="float32")
    except ModelError as error:
        raise ExportError(f"base model: {error}") from None
    if source.kind == "gguf":
        _forget_gguf_quantization(model)  # dequantized to float on load, but still marked as GGUF-quantized
    return model, tokenizer, source


def _adapter_tokenizer(adapter: Path, fallback):
    """The tokenizer the trainer saved with the adapter (what training used), else the base's."""
    if not (adapter / "tokenizer_config.json").is_file():
        return fallback
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(adapter), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ExportError(f"{adapter / 'tokenizer_config.json'}: cannot load the tokenizer ({error})") from None


def _prepare_target(out_dir: Path) -> Path:
    """The temporary folder to write into; refuses to replace a folder that is not a model folder."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "config.json").is_file():
        raise ExportError(f"{out_dir}: exists and is not a model folder; not replacing it")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted merge
    return tmp


def merge(base_path: str, adapter_dir: Path, out_dir: Path) -> Path:
    """Merge the LoRA adapter in ``adapter_dir`` into the float base ``base_path`` ("" = embedded SmolLM2)
    and save an HF folder (safetensors + tokenizer) at ``out_dir``, written into ``out_dir.tmp`` and renamed.

    Raises ExportError for a missing adapter, a QLoRA run, a quantized base or an adapter on tied weights."""
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    adapter_dir, run = locate_adapter(adapter_dir)
    refuse_quantized_run(adapter_dir, run)
    adapter_config = _read_json(adapter_dir / ADAPTER_CONFIG)
    tmp = _prepare_target(out_dir)
    from peft import PeftModel  # after the checks: importing peft takes seconds

    model, tokenizer, _ = _load_float_base(base_path)
    if getattr(model.config, "tie_word_embeddings", False) and _touches_tied_weights(adapter_config):
        raise ExportError(f"{adapter_dir / ADAPTER_CONFIG}: the adapter changes lm_head/embed_tokens, which this "
                          f"base ties together; merging would change both")
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise ExportError(f"{adapter_dir}: the adapter does not fit the base {base_path or '(embedded)'}: "
                          f"{error}") from None
    merged = peft_model.merge_and_unload()
    try:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        _adapter_tokenizer(adapter_dir, tokenizer).save_pretrained(str(tmp))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# --- export --------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def report_path(out: Path) -> Path:
    """Where the export report of ``MODEL.gguf`` goes: ``MODEL.gguf.json``."""
    return out.with_name(out.name + ".json")


def convert_and_verify(merged_dir: Path, out: Path, quant: str, min_agreement: float | None = None,
                       n_threads: int = 2, context: dict | None = None) -> dict:
    """Convert the merged HF folder to a ``quant`` GGUF, verify it against the folder, and put it at ``out``
    only when the greedy agreement reaches ``min_agreement`` (default ``MIN_AGREEMENT[quant]``).
    Writes the report (plus ``context``) next to it (``report_path``) either way and returns it."""
    if quant not in QUANT_TYPES:
        raise ExportError(f"unknown quantization {quant!r}; one of {list(QUANT_TYPES)}")
    floor = MIN_AGREEMENT[quant] if min_agreement is None else min_agreement
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")  # the node never sees a half-written or unverified GGUF
    started = time.monotonic()
    try:
        convert(merged_dir, tmp, quant, n_threads)
        check = verify(tmp, merged_dir, n_threads=n_threads)
        passed = check.greedy_agreement >= floor
        report = {"gguf": str(out), "quant": quant, "size_bytes": tmp.stat().st_size,
                  "sha256": _sha256(tmp) if passed else None, "reference": str(merged_dir),
                  "verify": asdict(check), "min_agreement": floor, "passed": passed,
                  "seconds": round(time.monotonic() - started, 1), **(context or {})}
        if passed:
            tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    _atomic_write_json(report_path(out), report)
    return report


def export(run_dir_or_adapter: str | Path, out: Path, quant: str = "q8_0", base: str | None = None,
           merged_dir: Path | None = None, min_agreement: float | None = None, n_threads: int = 2) -> dict:
    """Merge the run's adapter into its float base, convert to a ``quant`` GGUF at ``out`` and verify it.

    ``base`` overrides the run's ``model.path``; ``merged_dir`` keeps the merged HF folder there (else it
    is a temporary folder beside ``out``, removed afterwards). Returns the report (also in
    ``MODEL.gguf.json``); ``report["passed"]`` is False when the GGUF failed the check (then not written).
    Raises ExportError / ConvertError naming the file when an input is wrong."""
    if quant not in QUANT_TYPES:
        raise ExportError(f"unknown quantization {quant!r}; one of {list(QUANT_TYPES)}")
    adapter, run = locate_adapter(run_dir_or_adapter)
    refuse_quantized_run(adapter, run)  # before minutes of loading
    base_path = base_model_path(adapter, run) if base is None else base
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = None if merged_dir is not None else Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    target = Path(merged_dir) if merged_dir is not None else scratch / "merged"
    context = {"adapter": str(adapter), "base": base_path or "(embedded SmolLM2)",
               "reference": str(target) if merged_dir is not None else "merged float model (removed afterwards)"}
    try:
        merge(base_path, adapter, target)
        return convert_and_verify(target, out, quant, min_agreement, n_threads, context)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


# --- CLI -----------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fatigue-llm export", description=__doc__.split("\n")[0])
    parser.add_argument("run", help="training run folder (with adapter/ and run.json) or an adapter folder")
    parser.add_argument("--out", required=True, help="output .gguf file (the report goes to OUT.json)")
    parser.add_argument("--quant", choices=QUANT_TYPES, default="q8_0")
    parser.add_argument("--base", help="base model (GGUF or HF folder) instead of the run's model.path")
    parser.add_argument("--merged-dir", help="keep the merged HF folder here (default: a temporary one)")
    parser.add_argument("--min-agreement", type=float,
                        help=f"greedy agreement needed to write the GGUF (default per quant: {MIN_AGREEMENT})")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fatigue_llm.intervention.models import ModelError

    try:
        report = export(args.run, Path(args.out), args.quant, args.base,
                        Path(args.merged_dir) if args.merged_dir else None, args.min_agreement, args.threads)
    except (ExportError, ConvertError, ModelError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    check = report["verify"]
    summary = (f"greedy agreement {check['greedy_agreement']:.3f} over {check['positions']} positions, "
               f"max |dlogit| {check['max_abs_logit_diff']:.4f}, mean {check['mean_abs_logit_diff']:.5f}")
    if not report["passed"]:
        print(f"error: {args.out} not written: {summary} is below {report['min_agreement']} "
              f"(report: {report_path(Path(args.out))})", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({args.quant}, {report['size_bytes'] / 2**20:.1f} MiB): {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
