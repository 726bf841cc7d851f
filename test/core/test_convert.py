"""Our HF Llama -> GGUF writer, llama.cpp quantization, and the verify comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fatigue_llm.intervention.convert import (
    ConvertError,
    convert,
    main,
    permute_rope,
    tensor_name,
    verify,
)
from fatigue_llm.intervention.models import make_random_llama


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return make_random_llama(tmp_path_factory.mktemp("hf"), shape="tiny", seed=1)


def test_tensor_names_follow_llama_cpp():
    assert tensor_name("model.embed_tokens.weight") == "token_embd.weight"
    assert tensor_name("model.layers.3.self_attn.k_proj.weight") == "blk.3.attn_k.weight"
    assert tensor_name("model.layers.0.mlp.down_proj.weight") == "blk.0.ffn_down.weight"
    assert tensor_name("lm_head.weight") == "output.weight"
    with pytest.raises(ConvertError, match="unexpected tensor"):
        tensor_name("model.layers.0.self_attn.rotary_emb.inv_freq")


def test_rope_permutation_interleaves_each_head_halves():
    head_dim, n_head = 4, 2
    weight = np.arange(n_head * head_dim, dtype=np.float32)[:, None]  # row i holds value i
    permuted = permute_rope(weight, n_head)[:, 0]
    # per head, rows (0, 1 | 2, 3) = (first half, second half) become (0, 2, 1, 3): pairs interleaved
    assert permuted.tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


@pytest.mark.slow
def test_f32_gguf_matches_transformers_exactly(tiny_llama, tmp_path):
    gguf = convert(tiny_llama, tmp_path / "tiny.f32.gguf", "f32")
    report = verify(gguf, tiny_llama)
    assert report.tokenizer_agreement == 1.0
    assert report.greedy_agreement == 1.0 and report.max_abs_logit_diff < 0.01


@pytest.mark.slow
def test_q8_0_keeps_greedy_agreement_high(tiny_llama, tmp_path):
    gguf = convert(tiny_llama, tmp_path / "tiny.q8_0.gguf", "q8_0")
    f32_size = (tiny_llama / "model.safetensors").stat().st_size
    assert gguf.stat().st_size < f32_size / 2.5  # 32 -> about 8.5 bits per weight
    report = verify(gguf, tiny_llama)
    assert report.greedy_agreement >= 0.85, report
    assert report.mean_abs_logit_diff < 0.05


@pytest.mark.slow
def test_cli_convert_and_verify(tiny_llama, tmp_path, capsys):
    out = tmp_path / "tiny.q4_0.gguf"
    assert main(["convert", str(tiny_llama), "--out", str(out), "--quant", "q4_0"]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    assert main(["verify", str(out), str(tiny_llama), "--json", "--min-agreement", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"greedy_agreement", "max_abs_logit_diff", "mean_abs_logit_diff"}
    assert main(["verify", str(out), str(tiny_llama), "--min-agreement", "1.01"]) == 1


def test_cli_bad_paths_exit_2(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing"), "--out", str(tmp_path / "x.gguf")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["convert", str(tmp_path), "--out", str(tmp_path / "x.gguf")]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "a.gguf"), str(tmp_path / "b")]) == 2
    assert "a.gguf" in capsys.readouterr().err


def test_unsupported_architecture_is_named(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert main(["convert", str(tmp_path), "--out", str(tmp_path / "x.gguf")]) == 2
    assert "gpt2" in capsys.readouterr().err
