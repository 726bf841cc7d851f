"""The embedded default is ours: SmolLM2 with the LoRA adapter this project trains (make adapter)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fatigue_llm.intervention.models import (
    BUNDLED_ADAPTER,
    ModelSource,
    default_adapter,
    embedded_model_path,
    resolve_model,
)

CARD = BUNDLED_ADAPTER.with_suffix(".json")


def test_the_bundled_adapter_applies_to_the_embedded_model_only():
    embedded = resolve_model("")
    assert default_adapter("", embedded) == BUNDLED_ADAPTER and BUNDLED_ADAPTER.is_file()
    assert default_adapter("none", embedded) is None  # the base model on request
    assert default_adapter("/x/other.gguf", embedded) == Path("/x/other.gguf")
    assert default_adapter("", ModelSource("gguf", Path("/models/tinyllama.q4_0.gguf"))) is None  # another base


def test_the_card_describes_this_file_and_how_to_rebuild_it():
    card = json.loads(CARD.read_text())
    assert card["sha256"] == hashlib.sha256(BUNDLED_ADAPTER.read_bytes()).hexdigest()
    assert card["rebuild"] == "make adapter" and card["data"]["train"] > 1000
    base, tuned = card["llamacpp_engine"]
    # what it was trained for, as the car runs it: the labelled action, in its own words
    assert tuned["action_accuracy"] > base["action_accuracy"] + 0.2
    assert tuned["accepted_as_written"] >= max(0.9, base["accepted_as_written"])


@pytest.mark.slow
def test_the_default_engine_answers_unseen_cases_in_its_own_words(tmp_path):
    """Cases from another seed than the adapter's training data, answered by the llm node's default engine
    (llama.cpp, embedded Q4_1 + the bundled adapter) and by the base alone."""
    from fatigue_llm.llm.config import LlmConfig
    from fatigue_llm.training.data import load_conversations
    from fatigue_llm.training.evaluate import evaluate_engine
    from fatigue_llm.training.train import engine_prompt_builder

    cases_csv = tmp_path / "unseen.csv"
    subprocess.run([sys.executable, "-m", "fatigue_llm.cli", "generate-data", str(cases_csv), "--rows", "40",
                    "--seed", "12345"], check=True, capture_output=True, timeout=120)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_path().parent), local_files_only=True,
                                              gguf_file=embedded_model_path().name)
    build = engine_prompt_builder(tokenizer, LlmConfig().max_message_chars)
    cases = [c for c in load_conversations(cases_csv, "cases_csv", build) if c.answerable][:24]
    tuned = evaluate_engine(LlmConfig(retrieval_k=0), cases, "default")
    base = evaluate_engine(LlmConfig(retrieval_k=0, lora_path="none"), cases, "base")
    assert tuned["action_accuracy"] >= base["action_accuracy"] + 0.2, (base, tuned)
    assert tuned["level_accuracy"] >= base["level_accuracy"] - 0.1, (base, tuned)
    assert tuned["accepted_as_written"] >= 0.9, tuned["rows"]  # its own sentence, not catalogue text
