"""``python -m fatigue_llm.training.export_onnx MERGED_DIR OUT_DIR``: a merged float HF folder -> an ONNX folder.

Runs inside ``.venv-onnx`` (``make onnx-env``: the ``onnx`` package needs protobuf >= 6, the main env pins < 5),
so it imports only torch, transformers, onnx, numpy, safetensors and the standard library. ``fatigue-llm export
RUN --onnx DIR`` calls it as a subprocess and verifies the result with onnxruntime in the main env.

The graph is one decoding step with an explicit KV cache, so decoding is incremental:

    inputs   input_ids (1 x seq, int64), attention_mask (1 x past+seq, int64), position_ids (1 x seq, int64),
             past_key_values.{i}.key / .value (1 x kv_heads x past x head_dim) for every layer i
    outputs  logits (1 x seq x vocab, float32), present.{i}.key / .value (1 x kv_heads x past+seq x head_dim)

``past`` may be 0 (the first call). OUT_DIR gets ``model.onnx`` + ``model.onnx.data`` (the weights, as external
data), the tokenizer files and ``onnx_manifest.json`` (layers, heads, kv heads, head dim, dtype, opset, source);
it is written in ``OUT_DIR.tmp`` and renamed. Exit 0 with a JSON summary on stdout, 2 with a message when the
input is wrong, 1 when the export or the ONNX check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

MANIFEST = "onnx_manifest.json"
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
DEFAULT_OPSET = 18
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json", "config.json")
SUPPORTED_TYPES = ("llama", "mistral", "qwen2")


class OnnxExportError(RuntimeError):
    """The input folder cannot be exported; the message names the file."""


def io_names(n_layers: int) -> tuple[list[str], list[str]]:
    """(input names, output names) of the step graph for ``n_layers`` layers."""
    past = [f"past_key_values.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise OnnxExportError(f"{path}: cannot read it as JSON ({error})") from None
    if config.get("model_type") not in SUPPORTED_TYPES:
        raise OnnxExportError(f"{path}: model_type {config.get('model_type')!r} is not one of {SUPPORTED_TYPES}")
    if "quantization_config" in config:
        raise OnnxExportError(f"{path}: the model is quantized (quantization_config); export needs float weights")
    if not any(folder.glob("*.safetensors")):
        raise OnnxExportError(f"{folder}: no *.safetensors weights")
    return config


def _layout(config: dict) -> dict:
    heads = int(config["num_attention_heads"])
    return {"layers": int(config["num_hidden_layers"]), "heads": heads,
            "kv_heads": int(config.get("num_key_value_heads") or heads),
            "head_dim": int(config.get("head_dim") or int(config["hidden_size"]) // heads),
            "hidden_size": int(config["hidden_size"]), "vocab_size": int(config["vocab_size"])}


def _step_module(model, n_layers: int):
    """The model as one decoding step over flat past key/value tensors (what the ONNX graph takes)."""
    import torch
    from transformers import DynamicCache

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(config=self.model.config)
            for layer in range(n_layers):
                cache.update(past[2 * layer], past[2 * layer + 1], layer)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            present = []
            for layer in range(n_layers):
                keys, values = _layer_kv(out.past_key_values, layer)
                present += [keys, values]
            return (out.logits, *present)

    return Step().eval()


def _layer_kv(cache, layer: int):
    """(keys, values) of one layer of a transformers cache (the 5.x ``layers`` API, else the legacy one)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return layers[layer].keys, layers[layer].values
    return cache.key_cache[layer], cache.value_cache[layer]


def _example_inputs(layout: dict, seq: int = 3, past: int = 5):
    import torch

    shape = (1, layout["kv_heads"], past, layout["head_dim"])
    generator = torch.Generator().manual_seed(0)
    kv = [torch.randn(shape, generator=generator) * 0.5 for _ in range(2 * layout["layers"])]
    ids = torch.randint(0, layout["vocab_size"], (1, seq), generator=generator)
    mask = torch.ones((1, past + seq), dtype=torch.int64)
    positions = torch.arange(past, past + seq, dtype=torch.int64)[None]
    return (ids, mask, positions, *kv)


def export_onnx(merged_dir: str | Path, out_dir: str | Path, opset: int = DEFAULT_OPSET) -> dict:
    """Export the float HF folder ``merged_dir`` to ``out_dir`` (see the module docstring). Returns the manifest.

    Raises OnnxExportError for an unusable input folder or an output folder that is not an ONNX folder."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    merged_dir, out_dir = Path(merged_dir), Path(out_dir)
    if not merged_dir.is_dir():
        raise OnnxExportError(f"{merged_dir}: no such folder (a merged Hugging Face model folder)")
    config = _read_config(merged_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise OnnxExportError(f"{out_dir}: exists and is not an ONNX export folder ({MANIFEST}); not replacing it")
    layout = _layout(config)
    started = time.monotonic()

    import onnx
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32, local_files_only=True,
                                                 use_safetensors=True, attn_implementation="sdpa")
    model.eval()
    step = _step_module(model, layout["layers"])
    inputs, outputs = io_names(layout["layers"])
    # batch stays 1 (the engine decodes one answer at a time); sequence, total and past lengths are dynamic
    seq = total = past_dim = torch.export.Dim.DYNAMIC
    dynamic = ({1: seq}, {1: total}, {1: seq}, tuple({2: past_dim} for _ in range(2 * layout["layers"])))
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with torch.no_grad():
            program = torch.onnx.export(step, _example_inputs(layout), dynamo=True, input_names=inputs,
                                        output_names=outputs, dynamic_shapes=dynamic, opset_version=opset,
                                        external_data=True, optimize=True, verbose=False)
        program.save(str(tmp / MODEL_FILE), external_data=True)
        _rename_external_data(tmp)
        onnx.checker.check_model(str(tmp / MODEL_FILE), full_check=False)
        graph = onnx.load(str(tmp / MODEL_FILE), load_external_data=False).graph
        names = ([i.name for i in graph.input], [o.name for o in graph.output])
        if names != (inputs, outputs):
            raise OnnxExportError(f"the exported graph has inputs {names[0][:4]}... and outputs {names[1][:3]}..., "
                                  f"expected {inputs[:4]}... and {outputs[:3]}...")
        for name in TOKENIZER_FILES:
            if (merged_dir / name).is_file():
                shutil.copy2(merged_dir / name, tmp / name)
        manifest = {"format": "fatigue-llm-onnx-kv", "version": 1, **layout, "dtype": "float32", "opset": opset,
                    "inputs": inputs[:3], "outputs": outputs[:1], "past_name": "past_key_values.{i}.{key|value}",
                    "present_name": "present.{i}.{key|value}", "source": str(merged_dir.resolve()),
                    "model_type": config.get("model_type"), "torch": torch.__version__, "onnx": onnx.__version__,
                    "export_seconds": round(time.monotonic() - started, 1),
                    "size_bytes": sum(p.stat().st_size for p in tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _rename_external_data(folder: Path) -> None:
    """Make the weights file ``model.onnx.data`` whatever name the exporter gave it (one file expected)."""
    import onnx

    model = onnx.load(str(folder / MODEL_FILE), load_external_data=False)
    locations = {entry.value for tensor in model.graph.initializer for entry in tensor.external_data
                 if entry.key == "location"}
    if locations in (set(), {DATA_FILE}):
        return
    model = onnx.load(str(folder / MODEL_FILE), load_external_data=True)
    for location in locations:
        (folder / location).unlink(missing_ok=True)
    onnx.save_model(model, str(folder / MODEL_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=DATA_FILE, size_threshold=1024)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fatigue_llm.training.export_onnx",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("merged_dir", help="merged float Hugging Face folder (safetensors + tokenizer)")
    parser.add_argument("out_dir", help="ONNX folder to write (model.onnx, model.onnx.data, tokenizer, manifest)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    try:
        manifest = export_onnx(args.merged_dir, args.out_dir, args.opset)
    except OnnxExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(manifest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
