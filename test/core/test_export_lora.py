"""The adapter alone as a llama.cpp LoRA GGUF (``fatigue-llm export RUN --lora-gguf``), applied by the llm node's
llama.cpp backend at load time: its layout, its logits against the merged model and the peft model, and refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from fatigue_llm.intervention.convert import VERIFY_PROMPTS, permute_rope, write_gguf
from fatigue_llm.intervention.models import ModelError, embedded_model_path
from fatigue_llm.training.config import LoraSection, RunConfig
from fatigue_llm.training.export import ExportError, export, export_lora_gguf, main

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MESSAGES = [{"role": "system", "content": "You advise a tired driver."},
            {"role": "user", "content": "I have been driving for three hours. What should I do?"}]
Q_PROJ = "base_model.model.model.layers.0.self_attn.q_proj"


def _scores(model_path: Path, lora_path: Path | None, token_lists) -> list[np.ndarray]:
    """Teacher-forced logits of each token list through the node's llama.cpp backend."""
    from fatigue_llm.intervention.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(model_path, n_threads=2, n_ctx=512, logits_all=True, lora_path=lora_path)
    try:
        return [backend.logits(tokens) for tokens in token_lists]
    finally:
        backend.close()


def _compare(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    diffs = np.concatenate([np.abs(x - y).ravel() for x, y in zip(a, b, strict=True)])
    agree = np.concatenate([x.argmax(-1) == y.argmax(-1) for x, y in zip(a, b, strict=True)])
    return {"max": float(diffs.max()), "mean": float(diffs.mean()), "greedy": float(agree.mean())}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A run folder with a LoRA (r 8, alpha 16) on all seven projections of the embedded SmolLM2, B random;
    the peft model's and the base's transformers logits on VERIFY_PROMPTS (base dequantized from the Q4_1
    GGUF, as training sees it), and that dequantized base saved as an HF folder."""
    import torch

    from fatigue_llm.training.train import build_model

    config = RunConfig(lora=LoraSection(target_modules=ALL_PROJECTIONS))
    torch.manual_seed(0)
    model, tokenizer = build_model(config)
    model.eval()  # no LoRA dropout
    root = tmp_path_factory.mktemp("lora_run")
    tokens = [tokenizer(prompt, add_special_tokens=False).input_ids for prompt in VERIFY_PROMPTS]
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.04)
        peft = [model(input_ids=torch.tensor([ids])).logits[0].numpy() for ids in tokens]
        with model.disable_adapter():
            base = [model(input_ids=torch.tensor([ids])).logits[0].numpy() for ids in tokens]
    model.save_pretrained(str(root / "adapter"), safe_serialization=True)
    tokenizer.save_pretrained(str(root / "adapter"))
    (root / "run.json").write_text(json.dumps({"config": dataclasses.asdict(config)}))
    model.unload().save_pretrained(str(root / "base_hf"), safe_serialization=True)  # LoRA layers removed
    tokenizer.save_pretrained(str(root / "base_hf"))
    return {"root": root, "tokens": tokens, "peft": peft, "base": base}


@pytest.fixture(scope="module")
def ggufs(lora_run, tmp_path_factory):
    """The LoRA GGUF (through the CLI), the merged model as an f32 GGUF (``export``) and the dequantized base
    as an f32 GGUF (our writer: the same tensor names and Q/K permutation as the embedded Q4_1 GGUF)."""
    out = tmp_path_factory.mktemp("ggufs")
    assert main([str(lora_run["root"]), "--lora-gguf", str(out / "adapter.lora.gguf")]) == 0
    merged = export(lora_run["root"], out / "merged.f32.gguf", "f32")
    assert merged["passed"], merged
    write_gguf(lora_run["root"] / "base_hf", out / "base.f32.gguf", "f32")
    return {"lora": out / "adapter.lora.gguf", "merged": out / "merged.f32.gguf", "base_f32": out / "base.f32.gguf"}


@pytest.mark.slow
def test_lora_gguf_layout_is_what_llama_cpp_reads(lora_run, ggufs):
    from gguf import GGUFReader
    from safetensors import safe_open

    reader = GGUFReader(str(ggufs["lora"]))
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    assert fields["general.architecture"] == "llama" and fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora" and fields["adapter.lora.alpha"] == 16.0
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    assert len(tensors) == 30 * len(ALL_PROJECTIONS) * 2
    # GGUF shapes are ne order: A (r x in) -> [in, r], B (out x r) -> [r, out]
    assert list(tensors["blk.0.attn_q.weight.lora_a"].shape) == [576, 8]
    assert list(tensors["blk.0.attn_q.weight.lora_b"].shape) == [8, 576]
    assert list(tensors["blk.29.attn_k.weight.lora_b"].shape) == [8, 192]  # 3 KV heads of 64
    assert list(tensors["blk.3.ffn_down.weight.lora_a"].shape) == [1536, 8]
    assert all(tensor.tensor_type.name == "F32" for tensor in tensors.values())  # the adapter's own float32
    with safe_open(str(lora_run["root"] / "adapter" / "adapter_model.safetensors"), framework="np") as handle:
        b_q = handle.get_tensor(f"{Q_PROJ}.lora_B.weight")
        a_q = handle.get_tensor(f"{Q_PROJ}.lora_A.weight")
        b_v = handle.get_tensor(Q_PROJ.replace("q_proj", "v_proj") + ".lora_B.weight")
    stored = lambda name: np.asarray(tensors[name].data).reshape(tensors[name].data.shape)  # noqa: E731
    assert np.array_equal(stored("blk.0.attn_q.weight.lora_a"), a_q)
    assert np.array_equal(stored("blk.0.attn_q.weight.lora_b"), permute_rope(b_q, 9))  # RoPE rows, as the base's Q
    assert not np.array_equal(stored("blk.0.attn_q.weight.lora_b"), b_q)
    assert np.array_equal(stored("blk.0.attn_v.weight.lora_b"), b_v)  # V is not permuted
    assert sorted(path.name for path in ggufs["lora"].parent.iterdir() if ".tmp" in path.name) == []


@pytest.mark.slow
def test_lora_on_the_float_base_equals_the_merged_model(lora_run, ggufs):
    """Same base weights, both in llama.cpp float32: any difference is the LoRA GGUF (names, shapes, the q/k
    permutation of B, alpha / r), not quantization."""
    tokens = lora_run["tokens"]
    merged = _scores(ggufs["merged"], None, tokens)
    with_lora = _scores(ggufs["base_f32"], ggufs["lora"], tokens)
    without = _scores(ggufs["base_f32"], None, tokens)
    close, apart = _compare(with_lora, merged), _compare(without, merged)
    assert close["max"] < 0.05 and close["greedy"] == 1.0, close
    assert apart["max"] > 2.0 and apart["mean"] > 20 * close["mean"], (apart, close)  # the adapter matters


@pytest.mark.slow
def test_lora_on_the_embedded_q4_1_base_tracks_the_peft_model(lora_run, ggufs):
    """The car's case: the Q4_1 base stays quantized and the LoRA is added at load time. Reference: the peft
    model on the dequantized base (what was trained). llama.cpp on Q4_1 differs from transformers on the same
    dequantized weights by itself (its activations are quantized too); the LoRA must add little to that and
    be much closer to the reference than the plain Q4_1 base."""
    tokens, peft = lora_run["tokens"], lora_run["peft"]
    q4 = embedded_model_path()
    with_lora, without = _scores(q4, ggufs["lora"], tokens), _scores(q4, None, tokens)
    lora_vs_peft, base_vs_peft = _compare(with_lora, peft), _compare(without, peft)
    engine_noise = _compare(without, lora_run["base"])  # Q4_1 in llama.cpp vs dequantized in transformers
    assert lora_vs_peft["mean"] < 0.4 * base_vs_peft["mean"], (lora_vs_peft, base_vs_peft)
    assert lora_vs_peft["mean"] < 1.5 * engine_noise["mean"], (lora_vs_peft, engine_noise)
    assert lora_vs_peft["greedy"] >= 0.88 and lora_vs_peft["greedy"] > base_vs_peft["greedy"], lora_vs_peft
    merged = _scores(ggufs["merged"], None, tokens)  # the merged f32 export: the same picture
    assert _compare(with_lora, merged)["mean"] < 0.4 * _compare(without, merged)["mean"]
    assert _compare(with_lora, without)["max"] > 2.0  # the LoRA does change the Q4_1 model


@pytest.mark.slow
def test_llm_node_backend_takes_the_lora_gguf(ggufs):
    from fatigue_llm.intervention.backends import create_backend
    from fatigue_llm.llm.config import LlmConfig

    node = create_backend(LlmConfig(backend="llamacpp", model_path=str(ggufs["base_f32"]),
                                    lora_path=str(ggufs["lora"])))
    merged = create_backend(LlmConfig(backend="llamacpp", model_path=str(ggufs["merged"])))
    try:
        assert node.lora_path == ggufs["lora"]
        ours, theirs = node.generate(MESSAGES, 16, 120.0), merged.generate(MESSAGES, 16, 120.0)
    finally:
        node.close()
        merged.close()
    assert len(ours.tokens) > 0 and ours.tokens == theirs.tokens, (ours.text, theirs.text)


# --- refusals (no model loaded) --------------------------------------------------------------------------

def _adapter(root: Path, config: dict | None = None, tensors: dict | None = None) -> Path:
    import torch
    from safetensors.torch import save_file

    root.mkdir(parents=True)
    (root / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "bias": "none", **(config or {})}))
    if tensors is None:
        tensors = {f"{Q_PROJ}.lora_A.weight": torch.zeros(8, 576), f"{Q_PROJ}.lora_B.weight": torch.zeros(576, 8)}
    save_file(tensors, str(root / "adapter_model.safetensors"))
    return root


def test_bad_adapter_folders_are_refused_naming_the_file(tmp_path, capsys):
    import torch

    out = tmp_path / "x.lora.gguf"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match=r"empty/adapter/adapter_config\.json: no LoRA adapter here"):
        export_lora_gguf(tmp_path / "empty", out)
    assert main([str(tmp_path / "empty"), "--lora-gguf", str(out)]) == 2
    assert "adapter_config.json: no LoRA adapter here" in capsys.readouterr().err
    dora = _adapter(tmp_path / "dora", {"use_dora": True})
    with pytest.raises(ExportError, match=r"dora/adapter_config\.json: use_dora .* cannot be written"):
        export_lora_gguf(dora, out, embedded_model_path())
    broken = _adapter(tmp_path / "broken")
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ExportError, match="adapter_model.safetensors: cannot read the adapter weights"):
        export_lora_gguf(broken, out, embedded_model_path())
    lonely = _adapter(tmp_path / "lonely", tensors={f"{Q_PROJ}.lora_A.weight": torch.zeros(8, 576)})
    with pytest.raises(ExportError, match="q_proj has lora_A but not its partner"):
        export_lora_gguf(lonely, out, embedded_model_path())
    other = _adapter(tmp_path / "other", tensors={f"{Q_PROJ}.lora_A.weight": torch.zeros(8, 64),
                                                  f"{Q_PROJ}.lora_B.weight": torch.zeros(64, 8)})
    with pytest.raises(ExportError, match=r"maps 64 -> 64 features, the base's blk\.0\.attn_q\.weight 576 -> 576"):
        export_lora_gguf(other, out, embedded_model_path())
    embedding = _adapter(tmp_path / "embedding", tensors={
        "base_model.model.model.embed_tokens.lora_embedding_A": torch.zeros(8, 49152)})
    with pytest.raises(ExportError, match="is not a LoRA A/B matrix of a linear layer"):
        export_lora_gguf(embedding, out, embedded_model_path())
    head = _adapter(tmp_path / "head", tensors={"base_model.model.lm_head.lora_A.weight": torch.zeros(8, 576),
                                                "base_model.model.lm_head.lora_B.weight": torch.zeros(49152, 8)})
    with pytest.raises(ExportError, match=r"no tensor output\.weight \(the base ties lm_head"):
        export_lora_gguf(head, out, embedded_model_path())
    with pytest.raises(ExportError, match="base model: model path .*nowhere.gguf does not exist"):
        export_lora_gguf(other, out, tmp_path / "nowhere.gguf")
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_file()) == []  # no output, no .tmp


def test_a_small_adapter_is_written_with_its_alpha(tmp_path):
    """rslora: peft scales by alpha / sqrt(r), llama.cpp by alpha / r, so alpha * sqrt(r) is written."""
    import torch
    from gguf import GGUFReader

    summary = export_lora_gguf(_adapter(tmp_path / "rs", {"use_rslora": True, "r": 4},
                                        tensors={f"{Q_PROJ}.lora_A.weight": torch.ones(4, 576),
                                                 f"{Q_PROJ}.lora_B.weight": torch.ones(576, 4)}),
                               tmp_path / "rs.gguf", embedded_model_path())
    assert summary["alpha"] == 32.0 and summary["modules"] == 1 and summary["ranks"] == [4]
    reader = GGUFReader(str(tmp_path / "rs.gguf"))
    assert reader.fields["adapter.lora.alpha"].contents() == 32.0
    assert [tensor.name for tensor in reader.tensors] == ["blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b"]


def test_llamacpp_backend_options(tmp_path):
    from fatigue_llm.intervention.backends import BackendError, create_backend
    from fatigue_llm.llm.config import LlmConfig

    with pytest.raises(BackendError, match="takes a GGUF LoRA as 'lora_path'.*--lora-gguf"):
        create_backend(LlmConfig(backend="llamacpp", lora_path=str(tmp_path)))
    with pytest.raises(BackendError, match="'quantization' applies to backend 'transformers' only"):
        create_backend(LlmConfig(backend="llamacpp", quantization="int8_dynamic"))
    with pytest.raises(ModelError, match=r"GGUF LoRA .*missing\.gguf does not exist"):
        create_backend(LlmConfig(backend="llamacpp", lora_path=str(tmp_path / "missing.gguf")))
    (tmp_path / "fake.gguf").write_text("not a gguf")
    with pytest.raises(ModelError, match="is not a GGUF file"):
        create_backend(LlmConfig(backend="llamacpp", lora_path=str(tmp_path / "fake.gguf")))


def test_a_lora_gguf_for_another_base_is_refused_by_llama_cpp(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "other.gguf"), arch="llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 16.0)
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((8, 64), np.float32))
    writer.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((64, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    from fatigue_llm.intervention.backends.llamacpp import LlamaCppBackend

    with pytest.raises(ModelError, match=r"refused the LoRA .*other\.gguf .*has incorrect shape"):
        LlamaCppBackend(embedded_model_path(), lora_path=tmp_path / "other.gguf")
