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

``fatigue-llm export RUN_DIR --onnx DIR`` merges the same way and writes an ONNX folder with a KV cache for the
onnxruntime backend, verified against the merged model (``onnx_verify``; the export runs in ``.venv-onnx``).

``fatigue-llm export RUN_DIR --lora-gguf ADAPTER.gguf [--base BASE]`` writes only the adapter, unmerged, as a
llama.cpp LoRA GGUF (``export_lora_gguf``): the llm node's llama.cpp backend applies it to the base GGUF at
load time (``lora_path``), so the base can stay quantized and one base file serves several adapters.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from fatigue_llm.intervention.convert import QUANT_TYPES, ConvertError, convert, permute_rope, tensor_name, verify

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


PROJECTOR_FILE = "projector.safetensors"


def copy_projector(adapter: Path, out: Path) -> Path | None:
    """Copy the run's trained feature projector (``projector.enabled``: ``adapter/projector.safetensors``, else
    the run folder's) next to the written GGUF ``out``, where the engine looks for it (beside ``lora_path``
    or the model). None when the run has no projector. The copy is written to a temporary name and renamed."""
    source = next((p for p in (adapter / PROJECTOR_FILE, adapter.parent / PROJECTOR_FILE) if p.is_file()), None)
    if source is None:
        return None
    target = out.parent / PROJECTOR_FILE
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    return target


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

def sha256_file(path: Path) -> str:
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
                  "sha256": sha256_file(tmp) if passed else None, "reference": str(merged_dir),
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
        report = convert_and_verify(target, out, quant, min_agreement, n_threads, context)
        if report["passed"]:
            copied = copy_projector(adapter, out)
            if copied is not None:
                report["projector"] = str(copied)
                _atomic_write_json(report_path(out), report)
        return report
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


# --- the adapter alone as a llama.cpp LoRA GGUF ----------------------------------------------------------

LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")
ROPE_ROWS = {"self_attn.q_proj": "n_head", "self_attn.k_proj": "n_head_kv"}  # B rows permuted like the base's


def _base_layout(base: str | Path) -> dict:
    """What the LoRA GGUF must fit: architecture, head counts and (for a GGUF) the 2-D tensor shapes
    (GGUF order: ne0 = input features, ne1 = output features), of a base GGUF or of an HF Llama folder
    (which ``fatigue-llm model convert`` names and permutes the same way)."""
    from fatigue_llm.intervention.models import ModelError, resolve_model

    try:
        source = resolve_model(base)
    except ModelError as error:
        raise ExportError(f"base model: {error}") from None
    if source.kind == "hf":
        config = _read_json(source.path / "config.json")
        n_head = int(config["num_attention_heads"])
        return {"path": source.path, "arch": "llama" if config.get("model_type") in ("llama", "mistral") else
                str(config.get("model_type")), "n_head": n_head,
                "n_head_kv": int(config.get("num_key_value_heads", n_head)), "shapes": None,
                "tied": bool(config.get("tie_word_embeddings", False))}
    stat = source.path.stat()
    return _gguf_layout(str(source.path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _gguf_layout(path: str, size: int, mtime_ns: int) -> dict:
    """``_base_layout`` of a GGUF file, cached per (path, size, mtime): GGUFReader parses the whole
    vocabulary (~2 s for SmolLM2's 49152 tokens)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (OSError, ValueError) as error:
        raise ExportError(f"{path}: cannot read the base GGUF ({error})") from None

    def field(key: str):
        value = reader.fields.get(key)
        return None if value is None else value.contents()

    arch = str(field("general.architecture"))
    n_head = field(f"{arch}.attention.head_count")
    if field("general.type") == "adapter" or n_head is None:
        raise ExportError(f"{path}: not a base model GGUF (no {arch}.attention.head_count)")
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors if len(t.shape) == 2}
    return {"path": Path(path), "arch": arch, "n_head": int(n_head),
            "n_head_kv": int(field(f"{arch}.attention.head_count_kv") or n_head), "shapes": shapes,
            "tied": "output.weight" not in shapes}


def _lora_scale_alpha(adapter_config: dict, config_path: Path) -> tuple[float, str]:
    """(adapter.lora.alpha, dtype note): llama.cpp scales each B(A x) by alpha / rank (rank of that tensor),
    as peft does with lora_alpha / r; peft options it cannot express are refused, naming the option."""
    refusals = [
        (adapter_config.get("peft_type", "LORA") != "LORA", f"peft_type {adapter_config.get('peft_type')!r}"),
        (bool(adapter_config.get("use_dora")), "use_dora (DoRA's magnitude vectors)"),
        (bool(adapter_config.get("modules_to_save")), f"modules_to_save {adapter_config.get('modules_to_save')}"),
        (adapter_config.get("bias", "none") != "none" or bool(adapter_config.get("lora_bias")), "LoRA biases"),
        (bool(adapter_config.get("fan_in_fan_out")), "fan_in_fan_out"),
        (bool(adapter_config.get("alpha_pattern")), "alpha_pattern (one alpha per module)"),
        (bool(adapter_config.get("use_rslora")) and bool(adapter_config.get("rank_pattern")),
         "use_rslora with rank_pattern"),
    ]
    for refused, what in refusals:
        if refused:
            raise ExportError(f"{config_path}: {what} cannot be written as a llama.cpp LoRA GGUF "
                              f"(merge instead: `fatigue-llm export RUN --out X.gguf`)")
    alpha = float(adapter_config.get("lora_alpha", adapter_config.get("r", 8)))
    if adapter_config.get("use_rslora"):  # peft scales by alpha / sqrt(r); llama.cpp by alpha / r
        alpha *= math.sqrt(float(adapter_config.get("r", 8)))
    return alpha, "rslora" if adapter_config.get("use_rslora") else "lora"


def _read_lora_pairs(adapter: Path) -> dict[str, dict[str, object]]:
    """HF module name (``model.layers.0.self_attn.q_proj``) -> {"A": tensor, "B": tensor} of the adapter."""
    from safetensors import SafetensorError, safe_open

    weights = adapter / ADAPTER_WEIGHTS
    pairs: dict[str, dict[str, object]] = {}
    try:
        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                match = LORA_KEY.match(key)
                if match is None:
                    raise ExportError(f"{weights}: tensor {key!r} is not a LoRA A/B matrix of a linear layer "
                                      f"(embedding LoRA, DoRA or saved modules cannot go into a LoRA GGUF)")
                pairs.setdefault(match["module"], {})[match["part"]] = handle.get_tensor(key)
    except (SafetensorError, OSError) as error:
        raise ExportError(f"{weights}: cannot read the adapter weights ({error})") from None
    if not pairs:
        raise ExportError(f"{weights}: no LoRA tensors")
    for module, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise ExportError(f"{weights}: {module} has lora_{'A' if 'A' in pair else 'B'} but not its partner")
    return pairs


def export_lora_gguf(adapter_dir: str | Path, out: Path, base_gguf: str | Path | None = None) -> dict:
    """Write the run's peft LoRA adapter (``RUN_DIR/adapter`` or an adapter folder) as a llama.cpp LoRA GGUF
    at ``out`` (written to ``out.tmp`` and renamed): ``general.type = adapter``, ``adapter.type = lora``,
    ``adapter.lora.alpha``, and per adapted weight ``blk.N.attn_q.weight.lora_a`` (A, r x in: GGUF ne
    [in, r]) and ``.lora_b`` (B, out x r: ne [r, out]), as llama.cpp's convert_lora_to_gguf.py writes them.
    B of q_proj / k_proj gets the RoPE row permutation that the base's Q / K weights got in the GGUF, so
    B(A x) lands on the base's rows. float32 / float16 tensors are kept as they are (bfloat16 -> float32).

    ``base_gguf`` is the base the adapter will be applied to (a GGUF, or the HF folder it is converted from);
    default: the run's ``model.path`` ("" = the embedded SmolLM2 GGUF). Names and shapes are checked against
    it. Returns a summary dict. Raises ExportError naming the file for a missing or unusable adapter, an
    option llama.cpp cannot express (DoRA, saved modules, alpha_pattern...) or an adapter that does not fit."""
    import gguf
    import numpy as np
    import torch

    adapter, run = locate_adapter(adapter_dir)
    config_path = adapter / ADAPTER_CONFIG
    adapter_config = _read_json(config_path)
    alpha, kind = _lora_scale_alpha(adapter_config, config_path)
    base = base_model_path(adapter, run) if base_gguf is None else str(base_gguf)
    layout = _base_layout(base)
    if layout["arch"] != "llama":
        raise ExportError(f"{layout['path']}: architecture {layout['arch']!r} is not supported (llama only)")
    pairs = _read_lora_pairs(adapter)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch="llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(out.stem)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    ranks, dtypes = set(), set()
    try:
        for module, pair in sorted(pairs.items()):
            try:
                name = tensor_name(module + ".weight")
            except ConvertError:
                raise ExportError(f"{adapter / ADAPTER_WEIGHTS}: LoRA on {module!r}, which has no GGUF counterpart "
                                  f"(only the attention and MLP projections and lm_head)") from None
            a, b = pair["A"], pair["B"]
            if a.dtype == torch.bfloat16:
                a, b = a.float(), b.float()
            a, b = a.numpy(), b.numpy()
            if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
                raise ExportError(f"{adapter / ADAPTER_WEIGHTS}: {module}: lora_A {a.shape} and lora_B {b.shape} "
                                  f"do not form a low-rank pair")
            shapes = layout["shapes"]
            if shapes is not None:
                if name not in shapes:
                    tied = " (the base ties lm_head to the embeddings)" if name == "output.weight" else ""
                    raise ExportError(f"{adapter / ADAPTER_WEIGHTS}: {module}: the base {layout['path']} has no "
                                      f"tensor {name}{tied}")
                if shapes[name] != (a.shape[1], b.shape[0]):
                    raise ExportError(f"{adapter / ADAPTER_WEIGHTS}: {module}: the adapter maps {a.shape[1]} -> "
                                      f"{b.shape[0]} features, the base's {name} {shapes[name][0]} -> "
                                      f"{shapes[name][1]}: an adapter for another base")
            elif name == "output.weight" and layout["tied"]:
                raise ExportError(f"{adapter / ADAPTER_WEIGHTS}: LoRA on lm_head, which the base {layout['path']} "
                                  f"ties to the embeddings")
            for suffix, heads in ROPE_ROWS.items():
                if module.endswith(suffix):
                    if b.shape[0] % (2 * layout[heads]):
                        raise ExportError(f"{adapter / ADAPTER_WEIGHTS}: {module}: {b.shape[0]} rows do not split "
                                          f"into {layout[heads]} heads")
                    b = permute_rope(b, layout[heads])
            writer.add_tensor(name + ".lora_a", np.ascontiguousarray(a))
            writer.add_tensor(name + ".lora_b", np.ascontiguousarray(b))
            ranks.add(a.shape[0])
            dtypes.add(str(a.dtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(out)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    copied = copy_projector(adapter, out)
    return {"lora_gguf": str(out), "adapter": str(adapter), "base": str(layout["path"]), "kind": kind,
            "projector": None if copied is None else str(copied),
            "alpha": alpha, "ranks": sorted(ranks), "dtype": "/".join(sorted(dtypes)),
            "modules": len(pairs), "size_bytes": out.stat().st_size, "sha256": sha256_file(out)}


# --- CLI -----------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fatigue-llm export", description=__doc__.split("\n")[0])
    parser.add_argument("run", help="training run folder (with adapter/ and run.json) or an adapter folder")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="output .gguf file: the merged model (the report goes to OUT.json)")
    target.add_argument("--lora-gguf", metavar="OUT.gguf",
                        help="write only the adapter, unmerged, as a llama.cpp LoRA GGUF (the llm node's "
                             "lora_path with backend llamacpp); --quant, --merged-dir, --min-agreement do not apply")
    target.add_argument("--onnx", metavar="DIR",
                        help="write the merged model as an ONNX folder with a KV cache for backend onnxruntime "
                             "(exported in .venv-onnx: `make onnx-env`; report in DIR/verify.json; --min-agreement "
                             "default 0.99); --quant does not apply")
    parser.add_argument("--quant", choices=QUANT_TYPES, default="q8_0")
    parser.add_argument("--base", help="base model (GGUF or HF folder) instead of the run's model.path; with "
                                       "--lora-gguf the base the adapter will be applied to")
    parser.add_argument("--merged-dir", help="keep the merged HF folder here (default: a temporary one)")
    parser.add_argument("--min-agreement", type=float,
                        help=f"greedy agreement needed to write the GGUF (default per quant: {MIN_AGREEMENT})")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def _main_lora_gguf(args) -> int:
    from fatigue_llm.intervention.models import ModelError

    try:
        summary = export_lora_gguf(args.run, Path(args.lora_gguf), args.base)
    except (ExportError, ConvertError, ModelError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {summary['lora_gguf']} (LoRA of {summary['modules']} weights, rank {summary['ranks']}, alpha "
          f"{summary['alpha']:g}, {summary['dtype']}, {summary['size_bytes'] / 2**20:.1f} MiB) for the base "
          f"{summary['base']}")
    return 0


def _main_onnx(args) -> int:
    from fatigue_llm.intervention.models import ModelError
    from fatigue_llm.training.onnx_verify import REPORT, export_onnx_run

    try:
        report = export_onnx_run(args.run, Path(args.onnx), args.base,
                                 Path(args.merged_dir) if args.merged_dir else None, args.min_agreement, args.threads)
    except (ExportError, ConvertError, ModelError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    check = report["verify"]
    summary = (f"greedy agreement {check['greedy_agreement']:.3f} over {check['positions']} positions, decode "
               f"agreement {check['decode_agreement']:.3f} over {check['decode_tokens']} cached steps, max |dlogit| "
               f"{check['max_abs_logit_diff']:.5f}, mean {check['mean_abs_logit_diff']:.6f}")
    if not report["passed"]:
        print(f"error: {args.onnx} not written: {summary} is below {report['min_agreement']} or over "
              f"{report['max_logit_diff']} (report: {Path(args.onnx) / REPORT})", file=sys.stderr)
        return 1
    size_mib = report["manifest"]["size_bytes"] / 2**20
    print(f"wrote {args.onnx} ({size_mib:.1f} MiB, export {report['export_seconds']} s): {summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fatigue_llm.intervention.models import ModelError

    if args.lora_gguf:
        return _main_lora_gguf(args)
    if args.onnx:
        return _main_onnx(args)
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
