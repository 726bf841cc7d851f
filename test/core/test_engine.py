"""InterventionEngine with the real embedded GGUF and a real FAISS case store."""

from __future__ import annotations

import dataclasses

import pytest

from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.intervention.backends.base import Backend, BackendError, Generation
from fatigue_llm.intervention.config import InterventionConfig
from fatigue_llm.intervention.engine import EngineError, InterventionEngine, rule_decision_for
from fatigue_llm.intervention.models import ModelError
from fatigue_llm.intervention.types import ACTIONS, LEVEL_ACTION_CHOICES, Level, Source
from fatigue_llm.llm.config import LlmConfig

CONFIG = LlmConfig(generation_deadline=120.0, effectiveness_window=60.0)
RULES = InterventionConfig()
TIRED = FatigueFeatures(timestamp_s=100.0, window_duration=60.0, eye_closure_ratio=0.22,
                        blink_frequency=31.0, time_awake=17.0, time_driving=5400.0)
MICROSLEEP = FatigueFeatures(timestamp_s=200.0, window_duration=60.0, eye_closure_ratio=0.35,
                             microsleep=True, longest_eye_closure=1.4, microsleep_count=1)
RECOVERED = FatigueFeatures(timestamp_s=400.0, window_duration=60.0, eye_closure_ratio=0.04,
                            blink_frequency=15.0)


class FakeBackend(Backend):
    """Returns a fixed text (for answer-validation paths without a model)."""

    name = "fake"

    def __init__(self, text: str) -> None:
        self.text = text

    def generate(self, messages, max_new_tokens, deadline_s, json_schema=None, prefix_embeds=None, on_text=None):
        pieces = tuple(self.text[i:i + 4] for i in range(0, len(self.text), 4))
        logprobs = tuple(-0.1 for _ in pieces)
        return Generation(self.text, tuple(range(len(pieces))), logprobs, 0.01, 0.02, pieces)


class FakeEscalator:
    def __init__(self) -> None:
        self.submitted, self.closed = [], False

    def submit(self, features, local):
        self.submitted.append(local)
        return "outbox-1"

    def poll(self):
        return [dataclasses.replace(self.submitted[-1], source=Source.CLOUD)] if self.submitted else []

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = InterventionEngine(CONFIG, state_dir=tmp_path_factory.mktemp("state"), escalator=FakeEscalator())
    engine.load()
    yield engine
    engine.close()


def test_llm_decision_is_explained_with_features_and_cases(engine):
    rule = rule_decision_for(TIRED, RULES)
    assert rule.level == Level.WARNING
    cases_before = len(engine._parts.store)
    decision = engine.advise(TIRED, rule)
    assert decision.source == Source.LOCAL_LLM
    assert decision.level >= rule.level and decision.action in LEVEL_ACTION_CHOICES[decision.level]
    assert 0 < len(decision.message) <= CONFIG.max_message_chars
    assert decision.follows_id == rule.id and 0.0 <= decision.confidence <= 1.0
    assert "PERCLOS 0.22" in decision.explanation and "similar cases: #" in decision.explanation
    assert decision.latency_ms > 0
    assert len(engine._parts.store) == cases_before + 1  # remembered as a new case
    assert engine.prefix_tokens_cached > 100


def test_message_streams_while_the_model_writes(engine):
    streamed: list[str] = []
    decision = engine.advise(TIRED, rule_decision_for(TIRED, RULES), on_message=streamed.append)
    assert decision.source == "local_llm"
    assert streamed, "no text was streamed"
    assert all(a and b.startswith(a) and a != b for a, b in zip(streamed, streamed[1:], strict=False))
    # what was streamed is the model's own message; the published one is it, trimmed or catalogue text
    assert decision.message.rstrip(".!") in streamed[-1] or "catalogue text" in decision.explanation


def test_critical_is_escalated_and_followups_are_polled(engine):
    decision = engine.advise(MICROSLEEP, rule_decision_for(MICROSLEEP, RULES))
    assert decision.source == Source.LOCAL_LLM and decision.level == Level.CRITICAL
    assert decision.escalated and "escalated to the cloud" in decision.explanation
    followups = engine.poll_followups()
    assert followups and followups[0].source == Source.CLOUD


def test_effectiveness_is_recorded_after_the_window(engine):
    engine.advise(TIRED, rule_decision_for(TIRED, RULES))
    scored = engine.observe(RECOVERED)
    assert scored and all(0.0 <= value <= 1.0 for _, value in scored)
    case_id, value = scored[-1]
    assert engine._parts.store.get(case_id).effectiveness == pytest.approx((0.5 + value) / 2)


def test_deadline_exceeded_falls_back_to_the_rule(tmp_path):
    config = dataclasses.replace(CONFIG, generation_deadline=0.0)
    engine = InterventionEngine(config, state_dir=tmp_path)
    engine.load()
    try:
        rule = rule_decision_for(TIRED, RULES)
        decision = engine.advise(TIRED, rule)
    finally:
        engine.close()
    assert decision.source == Source.RULE and decision.message == ACTIONS[rule.action]
    assert decision.level == rule.level and "timeout" in decision.explanation


def advise_with_answer(state_dir, text: str):
    """One advise() on TIRED features with a backend that answers ``text``."""
    engine = InterventionEngine(CONFIG, backend=FakeBackend(text), state_dir=state_dir)
    engine.load()
    try:
        return engine.advise(TIRED, rule_decision_for(TIRED, RULES))
    finally:
        engine.close()


@pytest.mark.parametrize("text, reason", [
    ('{"level": "INFO", "action": "none", "message": "Fine."}', "below the rule level"),
    ('{"level": "WARNING", "action": "dashboard_notice", "message": "Plan a stop."}', "at level WARNING"),
    ('{"level": "WARNING", "action": "audio_chime", "confidence": 0.9, "message": "Stop."}', "unknown"),
    ("I think you are tired", "not valid JSON"),
])
def test_invalid_answers_fall_back_to_the_rule(tmp_path, text, reason):
    decision = advise_with_answer(tmp_path, text)
    assert decision.source == Source.RULE and reason in decision.explanation


def test_confidence_comes_from_the_decision_tokens(tmp_path):
    text = '{"level": "WARNING", "action": "suggest_break", "message": "Take a break."}'
    decision = advise_with_answer(tmp_path, text)
    assert decision.source == Source.LOCAL_LLM and decision.action == "suggest_break"
    assert "decision tokens 0.90" in decision.explanation  # exp(-0.1) of the level/action tokens


def test_corrupt_model_path_is_a_clear_error(tmp_path):
    corrupt = tmp_path / "model.gguf"
    corrupt.write_bytes(b"GGUF" + b"\0" * 64)
    engine = InterventionEngine(dataclasses.replace(CONFIG, model_path=str(corrupt)), state_dir=tmp_path)
    with pytest.raises(ModelError, match=str(corrupt)):
        engine.load()


def test_advise_before_load_is_an_error(tmp_path):
    engine = InterventionEngine(CONFIG, state_dir=tmp_path)
    with pytest.raises(EngineError, match="not loaded"):
        engine.advise(TIRED, rule_decision_for(TIRED, RULES))
    assert engine.observe(TIRED) == [] and engine.poll_followups() == []
    engine.close()  # closing an unloaded engine is harmless


def test_rule_decision_for_quiet_features_is_info():
    decision = rule_decision_for(RECOVERED, RULES)
    assert decision.level == Level.INFO and decision.action == "none" and decision.source == Source.RULE


def test_transformers_engine_uses_a_trained_projector_as_soft_prompt(tmp_path):
    from fatigue_llm.intervention.models import make_random_llama
    from fatigue_llm.intervention.projector import FeatureProjector

    model = make_random_llama(tmp_path / "tiny", shape="tiny", seed=0)
    config = dataclasses.replace(CONFIG, backend="transformers", model_path=str(model), max_new_tokens=48)
    without = InterventionEngine(config, state_dir=tmp_path / "a")
    without.load()
    assert without._parts.projector is None  # no trained projector beside the model: soft prompt off
    without.close()
    FeatureProjector(config.prefix_tokens, 64, seed=0).save(model / "projector.safetensors")
    engine = InterventionEngine(config, state_dir=tmp_path / "b")
    engine.load()
    try:
        assert engine._parts.projector is not None
        decision = engine.advise(TIRED, rule_decision_for(TIRED, RULES))
    finally:
        engine.close()
    assert decision.level >= Level.WARNING and decision.source in (Source.LOCAL_LLM, Source.RULE)
    # a projector trained before the virtual tokens moved to the end of the user turn (no layout in its file)
    # would be fed where it never learned to be: the engine refuses it by name
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(model / "projector.safetensors"), framework="pt") as handle:
        meta = {k: v for k, v in handle.metadata().items() if k != "slot_layout"}
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    save_file(tensors, str(model / "projector.safetensors"), metadata=meta)
    old = InterventionEngine(config, state_dir=tmp_path / "c")
    with pytest.raises(BackendError, match=r"projector.safetensors: projector trained with its virtual tokens at "
                                           r"'user-turn-start'.*retrain"):
        old.load()
