"""Export of a fine-tuned run: LoRA merge into the float base, GGUF conversion, verification against the merged
model, the llm node's llama.cpp backend on the result, and refusals (QLoRA runs, missing adapters)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fatigue_llm.training.config import RunConfig
from fatigue_llm.training.export import (
    ExportError,
    convert_and_verify,
    export,
    main,
    merge,
    report_path,
)

PROMPT = "PERCLOS 0.22, blink rate 31/min, awake 17.0 h. Please take a break at the next rest area."
MESSAGES = [{"role": "system", "content": "You advise a tired driver."},
            {"role": "user", "content": "I have been driving for three hours. What should I do?"}]


def fake_run(root: Path, quantization: str = "none") -> Path:
    """A run folder whose files pass the layout checks (no real weights: for refusals before loading)."""
    (root / "adapter").mkdir(parents=True)
    (root / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (root / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    config = dataclasses.asdict(RunConfig())
    config["model"]["quantization"] = quantization
    (root / "run.json").write_text(json.dumps({"config": config}))
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with a LoRA adapter on the embedded SmolLM2 whose B matrices are random (so merging
    changes the logits), plus the peft model's and the base's logits on PROMPT."""
    import torch

    from fatigue_llm.training.train import build_model

    torch.manual_seed(0)
    model, tokenizer = build_model(RunConfig())
    model.eval()  # no LoRA dropout
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.02)
        ids = tokenizer(PROMPT, return_tensors="pt").input_ids
        peft_logits = model(input_ids=ids).logits[0].numpy()
        with model.disable_adapter():
            base_logits = model(input_ids=ids).logits[0].numpy()
    root = tmp_path_factory.mktemp("run")
    model.save_pretrained(str(root / "adapter"), safe_serialization=True)
    tokenizer.save_pretrained(str(root / "adapter"))
    (root / "run.json").write_text(json.dumps({"config": dataclasses.asdict(RunConfig())}))
    return root, ids, peft_logits, base_logits


@pytest.fixture(scope="module")
def merged(run, tmp_path_factory):
    return merge("", run[0] / "adapter", tmp_path_factory.mktemp("merge") / "merged")


@pytest.mark.slow
def test_merged_model_equals_the_peft_model_and_is_a_plain_float_folder(run, merged):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    _, ids, peft_logits, base_logits = run
    model = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32, local_files_only=True)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].numpy()
    assert np.abs(logits - peft_logits).max() < 1e-4
    assert np.abs(logits - base_logits).max() > 0.1  # the adapter did change the model
    names = sorted(path.name for path in merged.iterdir())
    assert "model.safetensors" in names and "tokenizer.json" in names and not any(n.endswith(".bin") for n in names)
    config = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    with safe_open(str(merged / "model.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())  # noqa: SIM118 - safe_open has no __iter__
    assert not any("lora" in key for key in keys) and "lm_head.weight" not in keys  # tied: embeddings only
    assert not merged.with_name("merged.tmp").exists()


@pytest.mark.slow
def test_f32_and_f16_gguf_agree_with_the_merged_model_in_the_node_backend(merged, tmp_path):
    from gguf import GGUFReader

    from fatigue_llm.intervention.backends.llamacpp import LlamaCppBackend
    from fatigue_llm.intervention.backends.transformers_backend import TransformersBackend
    from fatigue_llm.intervention.models import resolve_model

    f32 = convert_and_verify(merged, tmp_path / "m.f32.gguf", "f32")
    check = f32["verify"]
    assert f32["passed"] and check["tokenizer_agreement"] == 1.0 and check["greedy_agreement"] == 1.0, f32
    assert check["max_abs_logit_diff"] < 0.05  # 30 layers in float32 (the 2-layer test model: < 0.01)
    assert json.loads(report_path(tmp_path / "m.f32.gguf").read_text()) == f32
    f16 = convert_and_verify(merged, tmp_path / "m.f16.gguf", "f16")
    assert f16["passed"] and f16["verify"]["greedy_agreement"] >= 0.98, f16
    names = {tensor.name for tensor in GGUFReader(str(tmp_path / "m.f16.gguf")).tensors}
    assert "token_embd.weight" in names and "output.weight" not in names  # llama.cpp reuses the embeddings
    # free greedy generation: the same tokens from llama.cpp (GGUF) and transformers (merged folder)
    node = LlamaCppBackend(tmp_path / "m.f32.gguf", n_threads=2)
    reference = TransformersBackend(resolve_model(merged), n_threads=2)
    try:
        ours, theirs = node.generate(MESSAGES, 16, 120.0), reference.generate(MESSAGES, 16, 120.0)
    finally:
        node.close()
        reference.close()
    assert len(ours.tokens) > 0 and ours.tokens == theirs.tokens, (ours.text, theirs.text)


@pytest.mark.slow
def test_cli_exports_q8_0_from_the_run_folder(run, tmp_path, python):
    out = tmp_path / "car" / "smollm2-ft.q8_0.gguf"
    done = subprocess.run([python, "-m", "fatigue_llm.cli", "export", str(run[0]), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wrote" in done.stdout and out.is_file()
    report = json.loads(report_path(out).read_text())
    assert report["quant"] == "q8_0" and report["passed"] and report["verify"]["greedy_agreement"] >= 0.85
    assert report["adapter"] == str(run[0] / "adapter") and report["size_bytes"] == out.stat().st_size
    assert sorted(path.name for path in out.parent.iterdir()) == [out.name, report_path(out).name]  # no leftovers


def test_qlora_run_is_refused_before_loading_anything(tmp_path):
    root = fake_run(tmp_path / "qlora", quantization="nf4")
    with pytest.raises(ExportError, match=r"run.json: the adapter was trained on a nf4 \(QLoRA\) base"):
        export(root, tmp_path / "x.gguf")
    with pytest.raises(ExportError, match="QLoRA"):
        merge("", root / "adapter", tmp_path / "merged")
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "merged").exists()


def test_cli_missing_adapter_exits_2_naming_the_path(tmp_path, python):
    missing = tmp_path / "no-such-run"
    done = subprocess.run([python, "-m", "fatigue_llm.cli", "export", str(missing), "--out", str(tmp_path / "x.gguf")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and str(missing) in done.stderr and "Traceback" not in done.stderr


def test_invalid_adapter_folders_exit_2_naming_the_file(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "x.gguf")]) == 2
    assert str(tmp_path / "empty" / "adapter" / "adapter_config.json") in capsys.readouterr().err
    root = fake_run(tmp_path / "run")
    (root / "adapter" / "adapter_model.safetensors").unlink()
    assert main([str(root), "--out", str(tmp_path / "x.gguf")]) == 2
    assert "adapter_model.safetensors: missing" in capsys.readouterr().err
    (root / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    (root / "run.json").write_text("{not json")
    assert main([str(root), "--out", str(tmp_path / "x.gguf")]) == 2
    assert "run.json: cannot read it as JSON" in capsys.readouterr().err
