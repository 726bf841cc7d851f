"""``fatigue-llm model verify-attention``: transformers' eager and SDPA attention agree in float32 (< 1e-4) on a
GQA Llama, in the prefill logits and in greedy decoding with the KV cache."""

from __future__ import annotations

import json

import pytest

from fatigue_llm.intervention.convert import ConvertError, main, verify_attention
from fatigue_llm.intervention.models import SHAPES, make_random_llama


@pytest.fixture(scope="module")
def gqa_llama(tmp_path_factory):
    assert SHAPES["tiny"]["num_key_value_heads"] < SHAPES["tiny"]["num_attention_heads"]  # 4 query / 2 KV heads
    return make_random_llama(tmp_path_factory.mktemp("gqa") / "tiny", "tiny")


def test_eager_and_sdpa_agree_on_a_gqa_llama(gqa_llama):
    report = verify_attention(gqa_llama)
    assert report["implementations"] == {"eager": "eager", "sdpa": "sdpa"}
    assert (report["num_attention_heads"], report["num_key_value_heads"]) == (4, 2)
    assert report["prefill_max_abs_logit_diff"] < 1e-4 and report["decode_max_abs_logit_diff"] < 1e-4, report
    assert report["greedy_identical"] and report["new_tokens"] == 16 and report["passed"], report
    assert report["prompts"] == 4 and report["positions"] > 40


def test_cli_prints_the_report_and_exits_0(gqa_llama, capsys):
    assert main(["verify-attention", str(gqa_llama), "--json", "--new-tokens", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["new_tokens"] == 4


def test_not_a_model_folder_exits_2(tmp_path, capsys):
    assert main(["verify-attention", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a Hugging Face model folder" in capsys.readouterr().err
    with pytest.raises(ConvertError, match="no config.json"):
        verify_attention(tmp_path)
