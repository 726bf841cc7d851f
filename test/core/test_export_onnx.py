"""ONNX export of a fine-tuned run (``fatigue-llm export RUN --onnx DIR``): a LoRA run trained for a few steps on the
embedded SmolLM2, merged, exported in ``.venv-onnx`` (``make onnx-env``), verified with onnxruntime against the
merged model, then run by the llm node's engine with ``backend: onnxruntime``; and the refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fatigue_llm.intervention.backends import create_backend
from fatigue_llm.intervention.backends.base import BackendError, GenerationTimeout
from fatigue_llm.intervention.backends.onnxruntime_backend import OnnxRuntimeBackend
from fatigue_llm.intervention.models import ModelError
from fatigue_llm.llm.config import LlmConfig
from fatigue_llm.training.config import RunConfig
from fatigue_llm.training.onnx_verify import MIN_AGREEMENT, ONNX_PYTHON_ENV

REPO = Path(__file__).resolve().parents[2]
MESSAGES = [{"role": "system", "content": "You advise a tired driver."},
            {"role": "user", "content": "I have been driving for three hours. What should I do?"}]
HEADER = "eye_closure_ratio,blink_frequency,head_nod,voice_quality,steering_reversal_rate,speed_variance,yaw_rate," \
         "time_awake,level,action,message\n"
ROW = "0.22,31,2,0.7,40,1.5,0.03,17,WARNING,suggest_break,Pull in at the next services for coffee.\n"


def _fake_run(root: Path) -> Path:
    """A run folder whose files pass the layout checks (no weights: for refusals before loading anything)."""
    (root / "adapter").mkdir(parents=True)
    (root / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (root / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    (root / "run.json").write_text(json.dumps({"config": dataclasses.asdict(RunConfig())}))
    return root


def _export_cli(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fatigue_llm.cli", "export", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# --- fast: refusals -------------------------------------------------------------------------------------

def test_missing_run_folder_exits_2_naming_it(tmp_path):
    missing = tmp_path / "no-such-run"
    done = _export_cli(str(missing), "--onnx", str(tmp_path / "onnx"))
    assert done.returncode == 2 and str(missing) in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "onnx").exists()


def test_missing_onnx_env_exits_2_naming_make_onnx_env(tmp_path):
    run = _fake_run(tmp_path / "run")
    done = _export_cli(str(run), "--onnx", str(tmp_path / "onnx"),
                       env={ONNX_PYTHON_ENV: str(tmp_path / "no-env" / "bin" / "python")})
    assert done.returncode == 2, done.stderr
    assert "make onnx-env" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "onnx").exists()


def test_a_folder_that_is_not_an_export_is_not_replaced(tmp_path):
    run = _fake_run(tmp_path / "run")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"")
    done = _export_cli(str(run), "--onnx", str(tmp_path / "photos"), env={ONNX_PYTHON_ENV: sys.executable})
    assert done.returncode == 2 and "is not an ONNX export folder" in done.stderr, done.stderr
    assert [p.name for p in (tmp_path / "photos").iterdir()] == ["holiday.jpg"]


def test_backend_refuses_a_folder_without_model_onnx(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match=r"has no model\.onnx.*fatigue-llm export RUN --onnx DIR"):
        OnnxRuntimeBackend(tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        OnnxRuntimeBackend(tmp_path / "missing")
    with pytest.raises(ModelError, match="has no model.onnx"):
        create_backend(LlmConfig(backend="onnxruntime", model_path=str(tmp_path)))
    with pytest.raises(BackendError, match="needs 'model_path'"):
        create_backend(LlmConfig(backend="onnxruntime"))
    with pytest.raises(BackendError, match="neither 'quantization' nor 'lora_path'"):
        create_backend(LlmConfig(backend="onnxruntime", model_path=str(tmp_path), quantization="int8_dynamic"))


def test_backend_refuses_a_folder_whose_export_failed_verification(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not read")
    (tmp_path / "onnx_manifest.json").write_text(json.dumps({"layers": 2, "kv_heads": 1, "head_dim": 8,
                                                              "vocab_size": 10}))
    (tmp_path / "verify.json").write_text(json.dumps({"passed": False}))
    with pytest.raises(ModelError, match="failed verification"):
        OnnxRuntimeBackend(tmp_path)


# --- slow: the whole path on the embedded SmolLM2 ---------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``make onnx-env`` (a no-op when it exists), a LoRA run of 2 steps on the embedded SmolLM2, and its
    ``fatigue-llm export --onnx`` (merged folder kept for comparisons)."""
    env = {k: v for k, v in os.environ.items() if k != ONNX_PYTHON_ENV}
    made = subprocess.run(["make", "-s", "onnx-env"], cwd=REPO, capture_output=True, text=True, timeout=1200, env=env)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-3000:]
    root = tmp_path_factory.mktemp("onnx_run")
    (root / "cases.csv").write_text(HEADER + ROW * 3)
    (root / "run.yaml").write_text("""
training: {learning_rate: 1.0e-3, max_steps: 2, gradient_accumulation: 1, warmup_ratio: 0.0, scheduler: constant,
           logging_steps: 1, eval_steps: 2, save_steps: 2, save_total_limit: 1}
lora: {r: 8, alpha: 16, dropout: 0.0}
data: {train: cases.csv, validation_fraction: 0.34}
output: {dir: run}
""")
    trained = subprocess.run([sys.executable, "-m", "fatigue_llm.training.train", "--config", str(root / "run.yaml")],
                             capture_output=True, text=True, timeout=900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    out, merged = root / "car" / "smollm2-ft.onnx", root / "merged"
    done = subprocess.run([sys.executable, "-m", "fatigue_llm.cli", "export", str(root / "run"), "--onnx", str(out),
                           "--merged-dir", str(merged)], capture_output=True, text=True, timeout=1500, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "out": out, "merged": merged, "stdout": done.stdout}


@pytest.mark.slow
def test_export_writes_a_verified_onnx_folder(exported):
    out = exported["out"]
    assert "wrote" in exported["stdout"]
    names = sorted(path.name for path in out.iterdir())
    for name in ("model.onnx", "model.onnx.data", "onnx_manifest.json", "verify.json", "tokenizer.json"):
        assert name in names, names
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary folders left
    report = json.loads((out / "verify.json").read_text())
    check = report["verify"]
    assert report["passed"] and report["min_agreement"] == MIN_AGREEMENT
    assert check["greedy_agreement"] >= MIN_AGREEMENT and check["decode_agreement"] >= MIN_AGREEMENT, check
    assert check["max_abs_logit_diff"] < 0.01 and check["mean_abs_logit_diff"] < 1e-3, check
    assert check["tokenizer_agreement"] == 1.0
    manifest = json.loads((out / "onnx_manifest.json").read_text())
    assert (manifest["layers"], manifest["heads"], manifest["kv_heads"], manifest["head_dim"]) == (30, 9, 3, 64)
    assert manifest["dtype"] == "float32" and manifest["opset"] >= 17


@pytest.mark.slow
def test_engine_answers_with_the_onnxruntime_backend(exported, tmp_path):
    from fatigue_llm.features.types import FatigueFeatures
    from fatigue_llm.intervention.backends.transformers_backend import TransformersBackend
    from fatigue_llm.intervention.config import InterventionConfig
    from fatigue_llm.intervention.engine import InterventionEngine, rule_decision_for
    from fatigue_llm.intervention.models import resolve_model
    from fatigue_llm.intervention.types import Level, Source

    config = LlmConfig(backend="onnxruntime", model_path=str(exported["out"]), generation_deadline=120.0)
    engine = InterventionEngine(config, state_dir=tmp_path)
    engine.load()
    try:
        tired = FatigueFeatures(timestamp_s=100.0, window_duration=60.0, eye_closure_ratio=0.22,
                                blink_frequency=31.0, time_awake=17.0, time_driving=5400.0)
        rule = rule_decision_for(tired, InterventionConfig())
        streamed: list[str] = []
        decision = engine.advise(tired, rule, on_message=streamed.append)
        assert decision.source == Source.LOCAL_LLM, (decision, engine.last_failure)
        assert decision.level >= Level.WARNING and decision.message and 0 < decision.confidence <= 1
        assert streamed and engine.prefix_tokens_cached > 100
        backend = engine._parts.backend
        assert backend.name == "onnxruntime" and not backend.supports_soft_prompt
        # free text: the same greedy tokens as transformers on the merged folder (the KV cache step by step)
        ours = backend.generate(MESSAGES, 16, 120.0)
        reference = TransformersBackend(resolve_model(exported["merged"]), n_threads=2)
        try:
            theirs = reference.generate(MESSAGES, 16, 120.0)
        finally:
            reference.close()
        assert len(ours.tokens) > 0 and ours.tokens == theirs.tokens, (ours.text, theirs.text)
        assert len(ours.token_logprobs) == len(ours.tokens) and all(lp <= 0 for lp in ours.token_logprobs)
        # a schema the template decoder does not take goes through the regex mask
        schema = {"type": "object", "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}}}
        answer = backend.generate(MESSAGES, 24, 120.0, json_schema=schema)
        assert 0 <= json.loads(answer.text)["score"] <= 1, answer.text
        with pytest.raises(GenerationTimeout):
            backend.generate(MESSAGES, 16, 0.0)
        assert backend.count_tokens("Please take a break.") > 2
    finally:
        engine.close()
