"""The feature projector trained with the adapter (soft prompt): config, prompt mode, training text = inference
text around the slot, training (loss falls, projector changes, checkpoints and resume), the llama.cpp embedding
path against tokens and against transformers, and the engine end to end on llama.cpp with a trained projector."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fatigue_llm.config import ConfigError
from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.intervention.config import InterventionConfig
from fatigue_llm.intervention.engine import rule_decision_for
from fatigue_llm.intervention.projector import FeatureProjector
from fatigue_llm.intervention.prompt import build_messages
from fatigue_llm.intervention.types import Level
from fatigue_llm.training.config import load_run_config
from fatigue_llm.training.data import IGNORE_INDEX, case_conversation, read_cases_csv

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "fatigue_llm" / "intervention" / "data" / "seed_cases.csv"
RULES = InterventionConfig()
TIRED = FatigueFeatures(eye_closure_ratio=0.22, blink_frequency=31.0, microsleep_count=1, time_awake=17.0,
                        window_duration=60.0)
MESSAGE_HEADER = ("eye_closure_ratio,blink_frequency,head_nod,voice_quality,steering_reversal_rate,speed_variance,"
                  "yaw_rate,time_awake,level,action,message\n")
ROWS = ("0.22,31,2,0.7,40,1.5,0.03,17,WARNING,suggest_break,Take a break soon.\n",
        "0.03,15,0,0.9,8,1.0,0.02,6,INFO,none,You seem alert. Drive safely.\n",
        "0.35,12,4,0.5,30,3.0,0.05,20,CRITICAL,pull_over,Please stop safely now.\n",
        "0.12,26,1,0.8,12,2.0,0.03,12,ADVISORY,dashboard_notice,Signs of tiredness: plan a rest.\n")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- config and prompt --------------------------------------------------------------------------------

def test_projector_section_defaults_off_and_is_validated(tmp_path):
    config = load_run_config(write(tmp_path / "run.yaml", "data: {train: x.csv}\n"))
    assert not config.projector.enabled and config.projector.n_tokens == 4
    with pytest.raises(ConfigError, match=r"bad.yaml: projector.n_tokens must be in \[1, 64\], got 0"):
        load_run_config(write(tmp_path / "bad.yaml", "projector: {n_tokens: 0}\ndata: {train: x.csv}\n"))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) projector.tokens"):
        load_run_config(write(tmp_path / "bad2.yaml", "projector: {tokens: 4}\ndata: {train: x.csv}\n"))
    assert config.projector.init == "text"
    with pytest.raises(ConfigError, match=r"bad3.yaml: projector.init must be one of \('text', 'random'\), got 'zer"):
        load_run_config(write(tmp_path / "bad3.yaml", "projector: {init: zeros}\ndata: {train: x.csv}\n"))
    shipped = load_run_config(REPO / "configs" / "smollm2_softprompt.yaml")
    assert shipped.projector.enabled and shipped.lora.enabled and shipped.training.frozen_prefix
    assert shipped.projector.n_tokens == 4  # the llm node's default prefix_tokens


def test_soft_prompt_mode_leaves_out_the_feature_text_only():
    rule = rule_decision_for(TIRED, RULES)
    text = build_messages(TIRED, rule)[1]["content"]
    soft = build_messages(TIRED, rule, soft_prompt=True)[1]["content"]
    assert text.startswith("Now: ") and "PERCLOS" in text
    assert soft == f"Rule: {rule.level.name} {rule.action}" and text.endswith(soft)
    case = SimpleNamespace(case=SimpleNamespace(features=TIRED, level=Level.WARNING, action="suggest_break",
                                               effectiveness=0.7))
    with_cases = build_messages(TIRED, rule, [case], soft_prompt=True)[1]["content"].splitlines()
    assert with_cases[:2] == [soft, "Cases:"] and "PERCLOS" in with_cases[2] and len(with_cases) == 3


def test_projector_embed_is_differentiable_and_matches_soft_prompt(tmp_path):
    projector = FeatureProjector(3, 16, seed=2, embed_norm=1.5, mlp_hidden=8)
    inputs = torch.from_numpy(np.stack([projector.input_vector(TIRED)] * 2))
    out = projector.embed(inputs)
    assert out.shape == (2, 3, 16) and out.requires_grad
    assert torch.allclose(out[0].detach(), projector.soft_prompt(TIRED))
    projector.save(tmp_path / "p.safetensors")
    loaded = FeatureProjector.load(tmp_path / "p.safetensors")
    assert loaded.mlp_hidden == 8 and torch.equal(loaded.soft_prompt(TIRED), projector.soft_prompt(TIRED))


# --- training on a tiny random Llama (fast) --------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from fatigue_llm.intervention.models import make_random_llama

    return make_random_llama(tmp_path_factory.mktemp("tiny") / "model", "tiny", seed=0)


def test_encode_soft_puts_masked_placeholders_at_the_slot_and_splice_fills_them(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fatigue_llm.intervention.backends.base import fixed_prefix_tokens
    from fatigue_llm.llm.config import LlmConfig
    from fatigue_llm.training.softprompt import encode_soft, render_ids, splice
    from fatigue_llm.training.train import engine_prompt_builder

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    build = engine_prompt_builder(tokenizer, LlmConfig().max_message_chars, soft_prompt=True)
    features, level, action, message = read_cases_csv(SEED)[0]
    conversation = case_conversation(features, level, action, message, build)
    projector = FeatureProjector(4, 64, seed=0)
    item = encode_soft(tokenizer, conversation, 2048, projector)
    slot = item["soft_start"]
    prefix = fixed_prefix_tokens(render_ids(tokenizer), conversation.prompt[:1])
    assert item["prefix_len"] == len(prefix) and item["input_ids"][:len(prefix)] == prefix  # what frozen_prefix shares
    prompt = render_ids(tokenizer)(conversation.prompt)
    assert slot == len(prompt) and item["input_ids"][:slot] == prompt  # the whole prompt, then the virtual tokens
    assert item["labels"][slot:slot + 4] == [IGNORE_INDEX] * 4 and item["labels"][slot + 4] != IGNORE_INDEX
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    ids = torch.tensor([item["input_ids"]])
    embeds = splice(model, projector, ids, torch.tensor([slot]), torch.tensor([item["soft_input"]]))
    assert torch.allclose(embeds[0, slot:slot + 4], projector.soft_prompt(features), atol=1e-6)
    assert torch.equal(embeds[0, :slot], model.get_input_embeddings()(ids)[0, :slot])


def _tiny_run(tmp_path: Path, model: Path, name: str, steps: int, frozen: bool, extra: str = "",
              init: str = "text") -> Path:
    data = write(tmp_path / "cases.csv", MESSAGE_HEADER + "".join(ROWS) * 2)
    return write(tmp_path / f"{name}.yaml", f"""
model: {{path: {model}}}
training: {{learning_rate: 3.0e-3, max_steps: {steps}, batch_size: 2, gradient_accumulation: 1, warmup_ratio: 0.0,
           scheduler: constant, logging_steps: 1, save_steps: 2, save_total_limit: 3, seed: 1,
           frozen_prefix: {str(frozen).lower()}, eval_steps: 100}}
lora: {{r: 4, alpha: 8, dropout: 0.0}}
projector: {{enabled: true, n_tokens: 2, learning_rate: 3.0e-2, hidden: 16, init: {init}}}
data: {{train: {data.name}, validation_fraction: 0.25}}
output: {{dir: {name}}}
{extra}""")


def _losses(run: Path) -> dict[int, float]:
    losses = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "loss" in entry:
            losses[entry["step"]] = entry["loss"]
    return losses


def _initial_projector(model_dir: Path, init: str) -> FeatureProjector:
    """The projector a run of ``_tiny_run`` starts from."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fatigue_llm.training.softprompt import init_token_ids, make_projector

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    ids = init_token_ids(AutoTokenizer.from_pretrained(str(model_dir)), 2) if init == "text" else None
    return make_projector(model, 2, 16, 0, ids)


@pytest.mark.parametrize(("frozen", "init"), [(False, "random"), (True, "text")])
def test_training_with_the_projector_lowers_the_loss_changes_it_and_saves_it_everywhere(tmp_path, tiny_llama,
                                                                                      frozen, init):
    from fatigue_llm.training.train import train

    config = load_run_config(_tiny_run(tmp_path, tiny_llama, "run", 6, frozen, init=init))
    summary = train(config)
    run = tmp_path / "run"
    final = summary["final"]
    assert final["eval_loss"] < final["eval_loss_before"], final
    trained = FeatureProjector.load(run / "projector.safetensors")
    fresh = _initial_projector(tiny_llama, init)
    assert trained.n_tokens == 2 and trained.hidden_size == 64
    changed = [not torch.equal(a, b) for a, b in zip([*trained.mlp.state_dict().values(), trained.base],
                                                      [*fresh.mlp.state_dict().values(), fresh.base], strict=True)]
    assert all(changed)  # every trained tensor got gradient steps (the base too: a zero one under init random)
    for folder in (run / "adapter", run / "checkpoint-2", run / "checkpoint-4", run / "checkpoint-6"):
        assert (folder / "projector.safetensors").is_file(), folder
    assert torch.equal(FeatureProjector.load(run / "adapter" / "projector.safetensors").soft_prompt(TIRED),
                       trained.soft_prompt(TIRED))
    assert not torch.equal(FeatureProjector.load(run / "checkpoint-2" / "projector.safetensors").soft_prompt(TIRED),
                           trained.soft_prompt(TIRED))


def test_a_text_initialised_soft_prompt_starts_as_the_feature_lines_first_tokens(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fatigue_llm.intervention.projector import FEATURE_NAMES, REFERENCE
    from fatigue_llm.intervention.prompt import render_features
    from fatigue_llm.training.softprompt import init_token_ids

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    line = "Now: " + render_features({name: REFERENCE[name][0] for name in FEATURE_NAMES})
    start = tokenizer.decode(init_token_ids(tokenizer, 3))
    assert line.startswith("Now: PERCLOS .05") and line.startswith(start) and len(start) >= 4, start
    projector = _initial_projector(tiny_llama, "text")
    table = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).get_input_embeddings().weight.detach()
    first = table[init_token_ids(tokenizer, 2)]
    expected = first / first.norm(dim=-1, keepdim=True) * float(table.norm(dim=-1).mean())
    for features in (TIRED, FatigueFeatures(eye_closure_ratio=0.02)):  # untrained: the same tokens for all
        assert torch.allclose(projector.soft_prompt(features), expected, atol=1e-5)


def test_resume_continues_from_the_checkpoints_projector(tmp_path, tiny_llama):
    import shutil

    from fatigue_llm.training.train import train

    train(load_run_config(_tiny_run(tmp_path, tiny_llama, "straight", 4, True)))
    # the same run stopped after its step-2 checkpoint: only that checkpoint left, then --resume
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    for leftover in ("checkpoint-4", "adapter"):
        shutil.rmtree(tmp_path / "resumed" / leftover)
    for leftover in ("projector.safetensors", "metrics.jsonl", "run.json"):
        (tmp_path / "resumed" / leftover).unlink()
    assert (tmp_path / "resumed" / "checkpoint-2" / "projector.safetensors").is_file()
    train(load_run_config(_tiny_run(tmp_path, tiny_llama, "resumed", 4, True)), resume=True)
    a, b = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(b) == [3, 4]
    for step in (3, 4):  # a fresh projector instead of the checkpoint's would change these
        assert b[step] == pytest.approx(a[step], rel=1e-5), (step, a, b)
    assert torch.allclose(FeatureProjector.load(tmp_path / "resumed" / "projector.safetensors").soft_prompt(TIRED),
                          FeatureProjector.load(tmp_path / "straight" / "projector.safetensors").soft_prompt(TIRED),
                          atol=1e-5)


# --- llama.cpp embedding path (embedded SmolLM2) ----------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2():
    """The embedded SmolLM2 in llama.cpp (logits for every position) and in transformers (dequantized)."""
    from fatigue_llm.intervention.backends.llamacpp import LlamaCppBackend
    from fatigue_llm.intervention.backends.transformers_backend import load_model
    from fatigue_llm.intervention.models import resolve_model

    source = resolve_model("")
    backend = LlamaCppBackend(source.path, n_threads=2, n_ctx=512, logits_all=True)
    model, tokenizer = load_model(source)
    yield backend, model, tokenizer
    backend.close()


MESSAGES = [{"role": "system", "content": "You advise a tired driver."},
            {"role": "user", "content": "Rule: WARNING audio_chime"}]


@pytest.mark.slow
def test_llamacpp_embeddings_reproduce_tokens_and_match_transformers_inputs_embeds(smollm2):
    from fatigue_llm.intervention.backends.base import fixed_prefix_tokens

    backend, model, tokenizer = smollm2
    ids = backend.render_tokens(MESSAGES)
    # inside the prompt (after the system turn), so positions follow the virtual tokens to compare there too
    slot = len(fixed_prefix_tokens(backend.render_tokens, MESSAGES[:1]))
    text = tokenizer("PERCLOS .22, blinks 31/min", add_special_tokens=False).input_ids
    table = model.get_input_embeddings().weight.detach()
    # SmolLM2 (llama): token embeddings enter the blocks unscaled, so a token's embedding row fed as an
    # embedding batch must give exactly what the token gives
    with_tokens = backend.logits([*ids[:slot], *text, *ids[slot:]])
    with_embeds = backend.logits_with_soft(ids, table[text].numpy(), slot)
    assert np.abs(with_tokens - with_embeds).max() < 1e-3
    # a soft prompt (random, at the projector's norm) through llama.cpp's embedding batch vs transformers'
    # inputs_embeds: as close as the two backends are on plain tokens (Q4_1 matmuls vs dequantized float)
    soft = FeatureProjector(4, table.shape[1], seed=0, embed_norm=float(table.norm(dim=-1).mean())).soft_prompt(TIRED)
    llama = backend.logits_with_soft(ids, soft.numpy(), slot)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(torch.tensor([ids]))
        spliced = torch.cat([embeds[:, :slot], soft[None], embeds[:, slot:]], dim=1)
        reference = model(inputs_embeds=spliced).logits[0].numpy()
        tokens_reference = model(input_ids=torch.tensor([[*ids[:slot], *text, *ids[slot:]]])).logits[0].numpy()
    baseline = np.abs(with_tokens - tokens_reference).mean()
    assert np.abs(llama - reference).mean() < 2.0 * baseline + 0.05, (np.abs(llama - reference).mean(), baseline)
    after = slice(slot + 4, None)  # the positions after the virtual tokens: the next-token choice agrees
    assert (llama[after].argmax(-1) == reference[after].argmax(-1)).mean() >= 0.85


@pytest.mark.slow
def test_llamacpp_soft_prompt_generation_reuses_the_prefix_and_counts_virtual_tokens(smollm2):
    backend, model, _ = smollm2
    table = model.get_input_embeddings().weight.detach()
    soft = FeatureProjector(4, table.shape[1], seed=0, embed_norm=float(table.norm(dim=-1).mean())).soft_prompt(TIRED)
    cached = backend.cache_prefix(MESSAGES[:1])
    schema = {"type": "object", "properties": {"level": {"type": "string", "enum": ["WARNING", "CRITICAL"]}},
              "required": ["level"]}
    first = backend.generate(MESSAGES, 16, 60.0, json_schema=schema, prefix_embeds=soft)
    again = backend.generate(MESSAGES, 16, 60.0, json_schema=schema, prefix_embeds=soft)
    plain = backend.generate(MESSAGES, 16, 60.0, json_schema=schema)
    assert json.loads(first.text)["level"] in ("WARNING", "CRITICAL") and first.text == again.text
    prompt = len(backend.render_tokens(MESSAGES))
    assert (first.cached_tokens, first.prompt_tokens) == (cached, prompt + 4)
    assert again.cached_tokens == prompt  # the whole prompt before the virtual tokens is reused, they never are
    assert (plain.cached_tokens, plain.prompt_tokens) == (prompt - 1, prompt)  # its last token again, for logits
    slot = prompt
    # another rule line in between: the first one's state comes back from the saved states, with the same answer
    other = [MESSAGES[0], {"role": "user", "content": "Rule: CRITICAL pull_over"}]
    backend.generate(other, 16, 60.0, json_schema=schema, prefix_embeds=soft)
    restores = backend.slot_restores
    back = backend.generate(MESSAGES, 16, 60.0, json_schema=schema, prefix_embeds=soft)
    assert backend.slot_restores == restores + 1 and back.cached_tokens == slot and back.text == first.text
    # the saved states are bounded: after SLOT_STATES other prompts the first one is evaluated again
    from fatigue_llm.intervention.backends.llamacpp import SLOT_STATES

    for level in range(SLOT_STATES):
        backend.generate([MESSAGES[0], {"role": "user", "content": f"Rule: CRITICAL stop_{level}"}], 4, 60.0,
                         json_schema=schema, prefix_embeds=soft)
    restores = backend.slot_restores
    evicted = backend.generate(MESSAGES, 16, 60.0, json_schema=schema, prefix_embeds=soft)
    assert len(backend._slot_states) == SLOT_STATES and backend.slot_restores == restores
    assert evicted.cached_tokens < slot and evicted.text == first.text


# --- the trained projector in the engine on llama.cpp (embedded SmolLM2) -------------------------------------

@pytest.mark.slow
def test_training_prompt_ids_equal_the_engine_prompt_ids_around_the_slot_and_engine_answers(tmp_path):
    from fatigue_llm.intervention.engine import InterventionEngine
    from fatigue_llm.intervention.types import Level, Source
    from fatigue_llm.llm.config import LlmConfig
    from fatigue_llm.training.export import export_lora_gguf
    from fatigue_llm.training.softprompt import encode_soft
    from fatigue_llm.training.train import engine_prompt_builder, train

    data = write(tmp_path / "cases.csv", MESSAGE_HEADER + "".join(ROWS))
    config = load_run_config(write(tmp_path / "run.yaml", f"""
training: {{learning_rate: 1.0e-3, max_steps: 1, batch_size: 4, gradient_accumulation: 1, warmup_ratio: 0.0,
           scheduler: constant, logging_steps: 1, save_steps: 100, frozen_prefix: true}}
lora: {{r: 4, alpha: 8, dropout: 0.0}}
projector: {{enabled: true, n_tokens: 4}}
data: {{train: {data.name}, validation_fraction: 0.0}}
output: {{dir: run}}
"""))
    train(config)
    summary = export_lora_gguf(tmp_path / "run", tmp_path / "gguf" / "adapter.lora.gguf")
    assert summary["projector"] == str(tmp_path / "gguf" / "projector.safetensors")
    llm = LlmConfig(lora_path=summary["lora_gguf"], retrieval_k=0, generation_deadline=60.0)
    engine = InterventionEngine(llm, state_dir=tmp_path / "state")
    engine.load()
    try:
        parts = engine._parts
        assert parts.projector is not None and engine.projector_file(parts.backend) == tmp_path / "gguf" / \
            "projector.safetensors"
        from fatigue_llm.intervention.backends.transformers_backend import load_model
        from fatigue_llm.intervention.models import resolve_model

        _, tokenizer = load_model(resolve_model(""))
        build = engine_prompt_builder(tokenizer, llm.max_message_chars, soft_prompt=True)
        for features, level, action, message in read_cases_csv(SEED)[::10]:
            item = encode_soft(tokenizer, case_conversation(features, level, action, message, build), 2048,
                               parts.projector)
            rule = rule_decision_for(features, RULES)
            messages = engine.request_messages(features, rule, [])
            assert "Now:" not in messages[1]["content"]
            engine_ids = parts.backend.render_tokens(messages)
            slot = item["soft_start"]
            assert item["prefix_len"] == engine.prefix_tokens_cached
            assert slot == parts.backend._slot(messages, engine_ids) == len(engine_ids)
            prompt = [t for t, label in zip(item["input_ids"], item["labels"], strict=True) if label == IGNORE_INDEX]
            assert prompt[:slot] + prompt[slot + 4:] == engine_ids  # HF tokenizer + template == llama.cpp's
        decision = engine.advise(TIRED, rule_decision_for(TIRED, RULES))
    finally:
        engine.close()
    assert decision.source == Source.LOCAL_LLM, decision.explanation
    assert decision.level >= Level.WARNING and decision.message
