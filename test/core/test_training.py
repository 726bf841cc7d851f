"""Fine-tuning: run config, data files, training text = inference text, labels, and a real LoRA run on the
embedded SmolLM2 whose held-out loss falls."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fatigue_llm.config import ConfigError
from fatigue_llm.training.config import load_run_config
from fatigue_llm.training.data import (
    IGNORE_INDEX,
    DataError,
    answer_text,
    case_conversation,
    read_cases_csv,
    read_messages,
    tokenize_conversation,
)

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "fatigue_llm" / "intervention" / "data" / "seed_cases.csv"
HEADER = "eye_closure_ratio,blink_frequency,head_nod,voice_quality,steering_reversal_rate,speed_variance,yaw_rate," \
         "time_awake,level,action\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- run config ----------------------------------------------------------------------------------------

def test_shipped_config_loads_and_set_overrides_a_key():
    config = load_run_config(REPO / "configs" / "smollm2_lora.yaml", ["training.learning_rate=1e-4",
                                                                      "lora.r=4"])
    assert config.training.learning_rate == 1e-4 and config.lora.r == 4
    assert config.resolve(config.data.train).resolve() == SEED


@pytest.mark.parametrize("text, expected", [
    ("training: {learning_rat: 0.1}\ndata: {train: x.csv}\n", r"unknown key\(s\) training.learning_rat"),
    ("training: {max_steps: many}\ndata: {train: x.csv}\n", r"training.max_steps: expected an integer, got 'many'"),
    ("optimizer: {}\n", r"unknown section\(s\) \['optimizer'\]"),
    ("training: {learning_rate: -1}\ndata: {train: x.csv}\n", r"training.learning_rate must be > 0, got -1"),
    ("model: [1, 2]\n", "section 'model' must be a mapping"),
    ("training: {\n", "not valid YAML"),
    ("training: {frozen_prefix: true, gradient_checkpointing: true}\ndata: {train: x.csv}\n",
     "training.frozen_prefix and training.gradient_checkpointing cannot both be true"),
    ("training: {optimizer: sgd}\ndata: {train: x.csv}\n",
     r"training.optimizer must be one of \('adamw', 'adamw_8bit'\), got 'sgd'"),
])
def test_bad_run_configs_name_file_key_and_value(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected) as error:
        load_run_config(write(tmp_path / "run.yaml", text))
    assert "run.yaml" in str(error.value)


def test_bad_override_is_named(tmp_path):
    path = write(tmp_path / "run.yaml", "data: {train: x.csv}\n")
    with pytest.raises(ConfigError, match="expected SECTION.KEY=VALUE"):
        load_run_config(path, ["learning_rate=1"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) lora.rank"):
        load_run_config(path, ["lora.rank=4"])


# --- data ----------------------------------------------------------------------------------------------

def test_bundled_cases_load_and_bad_rows_name_row_column_value(tmp_path):
    assert len(read_cases_csv(SEED)) == 42
    bad = write(tmp_path / "bad.csv", HEADER + "0.1,15,0,0.9,30,1,0.01,5,WARNING,audio_chime\n"
                                              "0.2,lots,0,0.9,30,1,0.01,5,WARNING,audio_chime\n")
    with pytest.raises(DataError, match=r"bad.csv: row 3, column 'blink_frequency': expected a number, got 'lots'"):
        read_cases_csv(bad)
    out_of_range = write(tmp_path / "range.csv", HEADER + "0.1,15,0,0.9,30,1,0.01,-5,WARNING,audio_chime\n")
    with pytest.raises(DataError, match=r"row 2.*'time_awake' = -5.0 is outside \[0, 72\] h"):
        read_cases_csv(out_of_range)
    with pytest.raises(DataError, match=r"missing column\(s\) \['action'\]"):
        read_cases_csv(write(tmp_path / "cols.csv", HEADER.replace(",action", "") + "0,0,0,0,0,0,0,0,INFO\n"))


def test_messages_and_sharegpt_files_load_and_a_missing_answer_is_named(tmp_path):
    good = write(tmp_path / "m.json", json.dumps([
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": "a"}]},
        {"conversations": [{"from": "human", "value": "u"}, {"from": "gpt", "value": "b"}]}]))
    conversations = read_messages(good)
    assert [c.answer for c in conversations] == ["a", "b"] and conversations[1].prompt[0]["role"] == "user"
    bad = write(tmp_path / "bad.json", json.dumps([{"messages": [{"role": "user", "content": "u"},
                                                                 {"role": "user", "content": "v"}]}]))
    with pytest.raises(DataError, match="bad.json: example 1: the last turn must be a non-empty assistant"):
        read_messages(bad)


# --- training text = inference text ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """The embedded model as the llm node runs it (llama.cpp engine) and as training loads it."""
    from fatigue_llm.intervention.backends.transformers_backend import load_model
    from fatigue_llm.intervention.engine import InterventionEngine
    from fatigue_llm.intervention.models import resolve_model
    from fatigue_llm.llm.config import LlmConfig

    engine = InterventionEngine(LlmConfig(), state_dir=tmp_path_factory.mktemp("state"))
    engine.load()
    _, tokenizer = load_model(resolve_model(""))
    yield engine, tokenizer
    engine.close()


def test_transformers_tokenizes_digits_and_spaces_as_llama_cpp():
    """transformers' GGUF loader drops SmolLM2's digit split (llama.cpp's "smollm" pre-tokenizer); load_model
    puts it back, so text with digits after spaces or newlines gives llama.cpp's tokens."""
    import random

    import llama_cpp

    from fatigue_llm.intervention.backends.transformers_backend import load_model
    from fatigue_llm.intervention.models import resolve_model

    source = resolve_model("")
    _, tokenizer = load_model(source)
    vocab = llama_cpp.Llama(str(source.path), vocab_only=True, verbose=False)
    pieces = ["a", "Now", "PERCLOS", "0.22", "17", "2026-12-01", "120", "km/h", " ", "  ", "\n", "\n ", ",", ":",
              "(", "%", "3.5", "blinks/min", "x7", "'s"]
    generator = random.Random(0)
    texts = ["a  42", "x 7\n 8", "time awake  17 h"] + [
        "".join(generator.choice(pieces) for _ in range(generator.randint(1, 12))) for _ in range(300)]
    for text in texts:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == vocab.tokenize(
            text.encode(), add_bos=False, special=False), repr(text)


@pytest.mark.slow
def test_training_prompt_tokens_equal_the_engine_prompt_tokens(smollm2):
    from fatigue_llm.intervention.config import InterventionConfig
    from fatigue_llm.intervention.engine import rule_decision_for
    from fatigue_llm.intervention.projector import retrieval_key
    from fatigue_llm.llm.config import LlmConfig
    from fatigue_llm.training.train import engine_prompt_builder

    engine, tokenizer = smollm2
    k = LlmConfig().retrieval_k
    for retrieval in (0, k):  # without cases, and with the cases the node's freshly seeded store retrieves
        build = engine_prompt_builder(tokenizer, LlmConfig().max_message_chars, retrieval_k=retrieval)
        with_cases = 0
        rows = read_cases_csv(SEED)[::7]
        # a car without voice and vehicle-bus signals: a shorter "Now" line leaves room for cases in the budget
        camera_only = [(dataclasses.replace(f, voice_quality=math.nan, steering_reversal_rate=math.nan,
                                            speed_variance=math.nan, yaw_rate=math.nan), *rest) for f, *rest in rows]
        for features, level, action, message in rows + camera_only:
            conversation = case_conversation(features, level, action, message, build)
            encoded = tokenize_conversation(tokenizer, conversation, 2048)
            prompt_tokens = [t for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True)
                             if label == IGNORE_INDEX]
            rule = rule_decision_for(features, InterventionConfig())
            cases = engine._parts.store.search(retrieval_key(features), retrieval) if retrieval else []
            assert len(cases) == retrieval
            engine_tokens = engine._parts.backend.render_tokens(engine.request_messages(features, rule, cases))
            assert prompt_tokens == engine_tokens  # HF tokenizer + template == llama.cpp's, token for token
            with_cases += "Cases:" in conversation.prompt[-1]["content"]  # as many as fit the user budget
        assert (with_cases > 0) == bool(retrieval), with_cases


@pytest.mark.slow
def test_labels_are_the_answer_and_the_end_of_turn_token(smollm2):
    from fatigue_llm.features.types import FatigueFeatures
    from fatigue_llm.training.data import Conversation, end_of_turn_id

    _, tokenizer = smollm2
    answer = answer_text("WARNING", "suggest_break", "Please take a break soon.")
    assert json.loads(answer) == {"level": "WARNING", "action": "suggest_break",
                                  "message": "Please take a break soon."}
    conversation = Conversation(({"role": "user", "content": str(FatigueFeatures())},), answer)
    encoded = tokenize_conversation(tokenizer, conversation, 2048)
    labelled = [label for label in encoded["labels"] if label != IGNORE_INDEX]
    assert labelled[-1] == end_of_turn_id(tokenizer) == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(labelled[:-1]) == answer
    first = encoded["labels"].index(labelled[0])
    assert all(label == IGNORE_INDEX for label in encoded["labels"][:first])


# --- a real LoRA run ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_lora_on_the_embedded_model_lowers_the_held_out_loss_and_saves_an_adapter(tmp_path):
    row = "0.22,31,2,0.7,40,1.5,0.03,17,WARNING,suggest_break,Pull in at the next services for coffee.\n"
    data = write(tmp_path / "cases.csv", HEADER.replace(",action\n", ",action,message\n") + row * 6)
    config = write(tmp_path / "run.yaml", f"""
training: {{learning_rate: 1.0e-3, max_steps: 6, gradient_accumulation: 1, warmup_ratio: 0.0,
           scheduler: constant, logging_steps: 1, eval_steps: 3, save_steps: 3, save_total_limit: 1}}
lora: {{r: 8, alpha: 16, dropout: 0.0}}
data: {{train: {data.name}, validation_fraction: 0.34}}
output: {{dir: run}}
""")
    done = subprocess.run([sys.executable, "-m", "fatigue_llm.training.train", "--config", str(config)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    final = summary["final"]
    assert final["steps"] == 6 and summary["data"] == {"examples": 6, "unanswerable_skipped": 0, "train": 4,
                                                       "validation": 2, "train_per_level": {"WARNING": 4}}
    assert final["eval_loss"] < 0.7 * final["eval_loss_before"], final
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert len(list((tmp_path / "run").glob("checkpoint-*"))) == 1  # rotation kept the newest only
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in entry for entry in logged) and any("eval_loss" in entry for entry in logged)

    # the car's view: the engine with this adapter vs the base model on the held-out cases
    compare = subprocess.run([sys.executable, "-m", "fatigue_llm.training.train", "--config", str(config),
                              "--mode", "compare", "--limit", "2"], capture_output=True, text=True, timeout=900)
    assert compare.returncode == 0, compare.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    base, tuned = report["results"]
    assert (base["model"], tuned["model"], tuned["cases"]) == ("base", "adapter", 2)
    assert tuned["perplexity"] < base["perplexity"]  # the held-out answers are what it was trained on
    for result in (base, tuned):
        assert 0 <= result["level_accuracy"] <= 1 and 0 <= result["accepted_as_written"] <= 1
        assert all(row["level"] in ("WARNING", "CRITICAL") for row in result["rows"])  # never below the rule
    assert "| adapter | 2 |" in compare.stdout and len(report["samples"]) == 2
    features = write(tmp_path / "f.json", json.dumps({"eye_closure_ratio": 0.22, "window_duration": 60.0}))
    one = subprocess.run([sys.executable, "-m", "fatigue_llm.training.train", "--config", str(config),
                          "--mode", "generate", "--features", str(features)], capture_output=True, text=True,
                         timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    assert json.loads(one.stdout.strip().splitlines()[-1])["level"] in ("WARNING", "CRITICAL")


def test_balanced_sampling_draws_every_fatigue_level_equally_and_replays_on_resume(tmp_path):
    import torch
    from transformers import TrainingArguments

    from fatigue_llm.training.train import ListDataset, _trainer_class, level_weights

    levels = ["INFO"] * 30 + ["WARNING"] * 6 + ["CRITICAL"] * 4
    weights = level_weights(levels)

    def draws(seed: int) -> list[int]:
        trainer = _trainer_class(weights, seed)(
            model=torch.nn.Linear(1, 1), train_dataset=ListDataset([{}] * len(levels)),
            args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[]))
        sampler = trainer._get_train_sampler()
        return [index for _epoch in range(50) for index in sampler]

    drawn = draws(0)
    shares = {level: sum(levels[i] == level for i in drawn) / len(drawn) for level in set(levels)}
    assert all(abs(share - 1 / 3) < 0.05 for share in shares.values()), shares  # unbalanced: INFO 0.75
    assert drawn == draws(0) and drawn != draws(1)  # a resumed run draws the same examples again
    plain = _trainer_class(None, 0)(model=torch.nn.Linear(1, 1), train_dataset=ListDataset([{}] * 4),
                                    args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[]))
    assert not isinstance(plain._get_train_sampler(), torch.utils.data.WeightedRandomSampler)


def test_train_cli_exits_2_naming_the_problem(tmp_path):
    config = write(tmp_path / "run.yaml", "data: {train: missing.csv}\n")
    done = subprocess.run([sys.executable, "-m", "fatigue_llm.training.train", "--config", str(config),
                           "--set", "training.max_steps=1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "missing.csv: cannot read" in done.stderr and "Traceback" not in done.stderr


# --- resume, early stopping, QLoRA on a small random Llama (fast) ---------------------------------------

CASE_ROW = "0.22,31,2,0.7,40,1.5,0.03,17,WARNING,suggest_break,{message}\n"
MESSAGE_HEADER = HEADER.replace(",action\n", ",action,message\n")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from fatigue_llm.intervention.models import make_random_llama

    return make_random_llama(tmp_path_factory.mktemp("tiny") / "model", "tiny", seed=0)


def _run(config: Path, *extra: str, wait: bool = True):
    command = [sys.executable, "-m", "fatigue_llm.training.train", "--config", str(config), *extra]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _losses(run_dir: Path) -> dict[int, float]:
    """The last logged training loss of each step (a resumed run logs the replayed steps again)."""
    losses = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "loss" in entry:
            losses[entry["step"]] = entry["loss"]
    return losses


def _tiny_config(tmp_path: Path, model: Path, name: str, training: str, extra: str = "", lr: float = 1e-3) -> Path:
    return write(tmp_path / f"{name}.yaml", f"""
model: {{path: {model}}}
training: {{learning_rate: {lr}, gradient_accumulation: 1, warmup_ratio: 0.0, scheduler: constant,
           logging_steps: 1, seed: 3, {training}}}
lora: {{r: 8, alpha: 16, dropout: 0.0}}
output: {{dir: {name}}}
{extra}""")


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_next_step_loss(tmp_path, tiny_llama):
    import signal
    import time

    data = write(tmp_path / "cases.csv", MESSAGE_HEADER + "".join(
        CASE_ROW.format(message=m) for m in ("Take a break soon.", "Stop for coffee at the next services.",
                                              "Open a window and plan a stop.", "Rest at the next exit.")))
    common = "max_steps: 6, save_steps: 3, save_total_limit: 3"
    extra = f"data: {{train: {data.name}, validation_fraction: 0.0}}"
    _run(_tiny_config(tmp_path, tiny_llama, "straight", common, extra))
    straight = _losses(tmp_path / "straight")
    interrupted = _tiny_config(tmp_path, tiny_llama, "interrupted", common, extra)
    process = _run(interrupted, wait=False)
    state = tmp_path / "interrupted" / "checkpoint-3" / "trainer_state.json"
    deadline = time.monotonic() + 600
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # a real crash in the middle of training
    process.wait(timeout=30)
    assert state.exists(), process.stderr.read()[-3000:]
    _run(interrupted, "--resume")
    resumed = _losses(tmp_path / "interrupted")
    assert sorted(straight) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):  # optimizer, scheduler, RNG and data order restored from checkpoint-3
        assert resumed[step] == pytest.approx(straight[step], rel=1e-6), (step, straight, resumed)


@pytest.mark.slow
def test_early_stopping_stops_when_the_held_out_loss_stops_improving(tmp_path, tiny_llama):
    train = write(tmp_path / "train.csv", MESSAGE_HEADER + CASE_ROW.format(message="Take a break soon.") * 4)
    held_out = write(tmp_path / "val.csv", MESSAGE_HEADER + CASE_ROW.format(
        message="Fresh air helps briefly, then plan a rest stop.") * 2)
    # a learning rate far too high: the held-out loss gets worse, and two evaluations without improvement stop it
    config = _tiny_config(tmp_path, tiny_llama, "early", "max_steps: 40, eval_steps: 1, save_steps: 1, "
                          "save_total_limit: 2, early_stopping_patience: 2",
                          f"data: {{train: {train.name}, validation: {held_out.name}}}", lr=0.3)
    _run(config)
    final = json.loads((tmp_path / "early" / "run.json").read_text())["final"]
    evals = [json.loads(line)["eval_loss"] for line in (tmp_path / "early" / "metrics.jsonl").read_text().splitlines()
             if "eval_loss" in line]
    assert final["steps"] < 40, final
    assert min(evals[:-2]) < min(evals[-3:-1])  # it stopped because the last evaluations did not improve


@pytest.mark.slow
def test_wandb_offline_logs_the_run_locally_and_sends_nothing(tmp_path, tiny_llama):
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal.datastore import DataStore

    data = write(tmp_path / "cases.csv", MESSAGE_HEADER + CASE_ROW.format(message="Take a break soon.") * 4)
    config = _tiny_config(tmp_path, tiny_llama, "wb", "max_steps: 3, save_steps: 3",
                          f"data: {{train: {data.name}, validation_fraction: 0.0}}")
    env_without_key = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    done = subprocess.run([sys.executable, "-m", "fatigue_llm.training.train", "--config", str(config),
                           "--set", "output.wandb=offline"],
                          capture_output=True, text=True, timeout=900, env=env_without_key)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, list((tmp_path / "wb").rglob("*"))
    store = DataStore()
    store.open_for_scan(str(runs[0]))
    logged = []
    while (raw := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            logged.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                           for item in record.history.item})
    losses = [entry["train/loss"] for entry in logged if "train/loss" in entry]
    assert losses == pytest.approx(list(_losses(tmp_path / "wb").values()), rel=1e-5)  # the same numbers as ours


def test_wandb_mode_is_validated(tmp_path):
    config = write(tmp_path / "run.yaml", "data: {train: x.csv}\noutput: {wandb: online}\n")
    with pytest.raises(ConfigError, match=r"output.wandb must be one of \('none', 'offline'\), got 'online'"):
        load_run_config(config)


@pytest.mark.slow
def test_qlora_trains_an_adapter_on_a_4bit_base(tmp_path, tiny_llama):
    data = write(tmp_path / "cases.csv", MESSAGE_HEADER + CASE_ROW.format(message="Take a break soon.") * 6)
    config = _tiny_config(tmp_path, tiny_llama, "qlora", "max_steps: 4, eval_steps: 2, save_steps: 2",
                          f"data: {{train: {data.name}, validation_fraction: 0.34}}")
    _run(config, "--set", "model.quantization=nf4")
    summary = json.loads((tmp_path / "qlora" / "run.json").read_text())
    assert summary["config"]["model"]["quantization"] == "nf4"
    assert summary["final"]["eval_loss"] < summary["final"]["eval_loss_before"]
    adapter = json.loads((tmp_path / "qlora" / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 8


def test_all_shipped_run_configs_are_valid():
    names = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
    assert names == ["smollm2_demo.yaml", "smollm2_lora.yaml", "smollm2_softprompt.yaml", "tinyllama_full.yaml",
                     "tinyllama_lora.yaml", "tinyllama_qlora.yaml"]
    for name in names:
        load_run_config(REPO / "configs" / name)
    assert load_run_config(REPO / "configs" / "tinyllama_qlora.yaml").model.quantization == "nf4"
    assert not load_run_config(REPO / "configs" / "tinyllama_full.yaml").lora.enabled


@pytest.mark.slow
def test_distributed_launch_trains_one_model_in_two_cpu_processes(tmp_path, tiny_llama):
    """Two CPU processes under torch.distributed.run, the launcher `accelerate launch --multi_gpu` runs (its
    own CPU path needs MPI): gradients are averaged across them (gloo), and only the main process writes
    the adapter, run.json and metrics."""
    data = write(tmp_path / "cases.csv", MESSAGE_HEADER + "".join(
        CASE_ROW.format(message=m) for m in ("Take a break soon.", "Stop for coffee at the next services.",
                                              "Open a window and plan a stop.", "Rest at the next exit.")))
    config = _tiny_config(tmp_path, tiny_llama, "ddp", "max_steps: 3, save_steps: 3, save_total_limit: 1",
                          f"data: {{train: {data.name}, validation_fraction: 0.0}}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "fatigue_llm.training.train", "--config", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    summary = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert summary["processes"] == 2 and summary["final"]["steps"] == 3
    assert (tmp_path / "ddp" / "adapter" / "adapter_model.safetensors").is_file()
    steps = [json.loads(line)["step"] for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3]  # logged once, by the main process
    assert done.stdout.count("trained 3 steps") == 2  # both processes ran the whole loop
