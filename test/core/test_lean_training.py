"""Training in little memory (fatigue_llm/training/lean.py): the answer-position loss equals the model's own,
glibc gives freed blocks back, a pre-quantized NF4 checkpoint loads 4-bit and trains, and the 4-bit base
keeps its dtype."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fatigue_llm.training.data import IGNORE_INDEX

REPO = Path(__file__).resolve().parents[2]
HEADER = "eye_closure_ratio,blink_frequency,head_nod,voice_quality,steering_reversal_rate,speed_variance,yaw_rate," \
         "time_awake,level,action,message\n"
ROW = "0.22,31,2,0.7,40,1.5,0.03,17,WARNING,suggest_break,{message}\n"
MESSAGES = ("Take a break soon.", "Stop for coffee at the next services.", "Open a window and plan a stop.",
            "Rest at the next exit.")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from fatigue_llm.intervention.models import make_random_llama

    return make_random_llama(tmp_path_factory.mktemp("tiny") / "model", "tiny", seed=0)


def _batch(vocab: int):
    """Two right-padded rows whose answers sit at different positions, as the collator builds them."""
    import torch

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (2, 24), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 15:24] = ids[0, 15:24]
    labels[1, 9:20] = ids[1, 9:20]
    return ids, mask, labels


def test_answer_position_loss_and_gradients_equal_the_models_own(tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM

    from fatigue_llm.training.lean import answer_loss, scored_positions

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    ids, mask, labels = _batch(model.config.vocab_size)
    keep = scored_positions(labels)
    assert keep.tolist() == list(range(8, 23))  # logits of the answers' preceding tokens only, not 24 positions
    for items in (None, torch.tensor(37)):  # a mean over this batch, or a sum over an accumulated batch
        model.zero_grad()
        reference = model(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=items).loss
        reference.backward()
        expected = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        outputs = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep)
        assert outputs.logits.shape[1] == len(keep)
        loss = answer_loss(outputs, labels, num_items_in_batch=items)
        loss.backward()
        assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
        for got, want in zip((p.grad for p in model.parameters()), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def _write_run(tmp_path: Path, model: Path, name: str, extra_training: str = "", quantization: str = "none",
               dtype: str = "float32") -> Path:
    data = tmp_path / "cases.csv"
    data.write_text(HEADER + "".join(ROW.format(message=m) for m in MESSAGES * 2))
    config = tmp_path / f"{name}.yaml"
    config.write_text(textwrap.dedent(f"""\
        model: {{path: {model}, quantization: {quantization}, dtype: {dtype}}}
        training: {{learning_rate: 1.0e-3, gradient_accumulation: 2, batch_size: 2, warmup_ratio: 0.0,
                   scheduler: constant, logging_steps: 1, seed: 3, max_steps: 3, save_steps: 3,
                   eval_steps: 3{extra_training}}}
        lora: {{r: 8, alpha: 16, dropout: 0.0}}
        data: {{train: {data.name}, validation_fraction: 0.25}}
        output: {{dir: {name}}}
        """))
    return config


def _train(config: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fatigue_llm.training.train", "--config", str(config), *extra],
                          capture_output=True, text=True, timeout=900)


def _step_losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


@pytest.mark.slow
def test_training_with_answer_logits_logs_the_same_losses_as_full_logits(tmp_path, tiny_llama):
    """Through Trainer (accumulation over 2 batches of 2, evaluation): the answer-only logits change memory
    and time, not the numbers."""
    for name, flag in (("answer", "true"), ("full", "false")):
        done = _train(_write_run(tmp_path, tiny_llama, name), "--set", f"training.answer_logits={flag}")
        assert done.returncode == 0, done.stderr[-3000:]
    answer, full = (json.loads((tmp_path / n / "run.json").read_text())["final"] for n in ("answer", "full"))
    assert _step_losses(tmp_path / "answer") == pytest.approx(_step_losses(tmp_path / "full"), rel=1e-5)
    assert len(_step_losses(tmp_path / "answer")) == 3
    assert answer["eval_loss"] == pytest.approx(full["eval_loss"], rel=1e-5)
    assert answer["eval_loss_before"] == pytest.approx(full["eval_loss_before"], rel=1e-5)


HEAP_CHILD = """
import ctypes, sys
from fatigue_llm.training.lean import bound_heap
bounded = sys.argv[1] == "bounded" and bound_heap()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def anon_mib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
def touched(size):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    return block
libc.free(touched(16 << 20))  # freeing one big mmapped block raises glibc's mmap threshold to its size
before = anon_mib()
blocks = [touched(4 << 20) for _ in range(64)]  # 256 MiB in blocks under the raised threshold
keep = blocks.pop()  # the last one stays, as live tensors do, above the freed ones
for block in blocks:
    libc.free(block)
print(bounded, anon_mib() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_bounded_heap_gives_freed_blocks_back_to_the_kernel():
    retained = {}
    for mode in ("default", "bounded"):
        done = subprocess.run([sys.executable, "-c", HEAP_CHILD, mode], capture_output=True, text=True,
                              timeout=60, cwd=REPO)
        assert done.returncode == 0, done.stderr
        bounded, mib = done.stdout.split()
        assert bounded == str(mode == "bounded")
        retained[mode] = float(mib)
    assert retained["default"] > 200, retained   # glibc's default keeps the freed 252 MiB resident
    assert retained["bounded"] < 20, retained    # bounded: only the block still in use


@pytest.mark.slow
def test_nf4_checkpoint_loads_in_4bit_and_trains_an_adapter(tmp_path, tiny_llama):
    import torch

    from fatigue_llm.intervention.backends.transformers_backend import load_model
    from fatigue_llm.intervention.models import ModelError, is_nf4_checkpoint, resolve_model

    out = tmp_path / "tiny-nf4"
    cli = [sys.executable, "-m", "fatigue_llm.cli", "model", "quantize-nf4", str(tiny_llama), "--out", str(out)]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert is_nf4_checkpoint(out) and not is_nf4_checkpoint(tiny_llama)
    assert not (tmp_path / "tiny-nf4.partial").exists()
    again = subprocess.run(cli, capture_output=True, text=True, timeout=600)  # never over an existing folder
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr

    saved, _ = load_model(resolve_model(str(out)), quantization="bnb_nf4", dtype="bfloat16")
    fresh, _ = load_model(resolve_model(str(tiny_llama)), quantization="bnb_nf4", dtype="bfloat16")
    layer = saved.model.layers[0].self_attn.q_proj
    assert type(layer).__name__ == "Linear4bit" and layer.weight.quant_type == "nf4"
    assert layer.weight.quant_state.nested  # double quantization: the block scales are 8-bit themselves
    ids = torch.arange(3, 19).unsqueeze(0)
    with torch.no_grad():  # the same 4-bit model as quantizing at load
        torch.testing.assert_close(saved(input_ids=ids).logits, fresh(input_ids=ids).logits)
    with pytest.raises(ModelError, match="already quantized"):
        from fatigue_llm.training.lean import save_nf4
        save_nf4(out, tmp_path / "twice")

    trained = _train(_write_run(tmp_path, out, "qlora", quantization="nf4", dtype="bfloat16",
                                extra_training=", gradient_checkpointing: true, bounded_heap: true"))
    assert trained.returncode == 0, trained.stderr[-3000:]
    final = json.loads((tmp_path / "qlora" / "run.json").read_text())["final"]
    assert final["eval_loss"] < final["eval_loss_before"]
    assert (tmp_path / "qlora" / "adapter" / "adapter_model.safetensors").is_file()

    refused = _train(_write_run(tmp_path, out, "not-qlora"))  # quantization: none on a 4-bit checkpoint
    assert refused.returncode == 2
    assert "is an NF4 checkpoint: set model.quantization: nf4" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.slow
def test_8bit_adamw_trains_the_adapter_with_8bit_moments_and_resumes_exactly(tmp_path, tiny_llama):
    """QLoRA's optimizer: bitsandbytes' blockwise 8-bit AdamW moments (for tensors of 4096+ elements, hence
    r 64 on the tiny model), saved in the checkpoint and restored on resume."""
    import torch

    extra = ", save_total_limit: 3, optimizer: adamw_8bit"
    for name in ("straight", "resumed"):
        (tmp_path / name).mkdir()
        config = _write_run(tmp_path / name, tiny_llama, "run", extra, quantization="nf4", dtype="bfloat16")
        config.write_text(config.read_text().replace("max_steps: 3, save_steps: 3", "max_steps: 4, save_steps: 2")
                          .replace("r: 8, alpha: 16", "r: 64, alpha: 64"))
        stop_early = ("--set", "training.max_steps=2") if name == "resumed" else ()
        done = _train(config, *stop_early)
        assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(tmp_path / "resumed" / "run" / "checkpoint-2" / "optimizer.pt", weights_only=True)["state"]
    packed = [entry["__bnb_optimizer_quant_state__"] for entry in state.values()]  # how bitsandbytes saves it
    moments = [t for entry in packed for key, t in entry.items() if key in ("state1", "state2")]
    large = [t for t in moments if t.numel() >= 4096]  # smaller ones (k/v lora_B here) stay float32
    assert len(large) >= 0.75 * len(moments) and all(t.dtype == torch.uint8 for t in large)
    done = _train(tmp_path / "resumed" / "run.yaml", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    straight, resumed = (_step_losses(tmp_path / n / "run") for n in ("straight", "resumed"))
    assert len(straight) == 4 and straight[0] > straight[-1]
    assert resumed[-2:] == pytest.approx(straight[-2:], rel=1e-5)  # steps 3 and 4 after the resume


def test_the_4bit_base_keeps_its_dtype_and_trains_only_the_adapter(tmp_path, tiny_llama):
    """peft's prepare_model_for_kbit_training would make embeddings and lm_head float32 (+0.5 GB on
    TinyLlama); ours keeps the bfloat16 they were loaded in."""
    import torch

    from fatigue_llm.training.config import load_run_config
    from fatigue_llm.training.train import build_model

    config = load_run_config(_write_run(tmp_path, tiny_llama, "dtype", quantization="nf4", dtype="bfloat16"))
    model, _ = build_model(config)
    base = model.get_base_model()
    assert base.get_input_embeddings().weight.dtype == torch.bfloat16
    assert base.lm_head.weight.dtype == torch.bfloat16
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)


def test_4bit_training_gradients_are_the_same_after_an_evaluation(tmp_path, tiny_llama):
    """bitsandbytes repacks 4-bit weights for a kernel without backward the first time a layer runs in eval
    mode on an AVX512-BF16 CPU (as Trainer's evaluation does); the training model must keep the path that
    passes gradients through the frozen base."""
    import torch
    from bitsandbytes.nn import Linear4bit

    from fatigue_llm.training.config import load_run_config
    from fatigue_llm.training.train import build_model

    config = load_run_config(_write_run(tmp_path, tiny_llama, "eval", quantization="nf4", dtype="bfloat16"))
    model, _ = build_model(config)
    for name, parameter in model.named_parameters():  # lora_B starts at zero: no gradient reaches layer 0's A
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.02)
    ids, mask, labels = _batch(model.config.vocab_size)

    def adapter_grads():
        model.train()
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    before = adapter_grads()
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids, attention_mask=mask)
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    assert layers and not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    after = adapter_grads()
    first = next(n for n in before if "layers.0." in n and "lora_A" in n)
    assert before[first].abs().sum() > 0  # the gradient reached the first layer through the frozen base
    for name in before:
        torch.testing.assert_close(after[name], before[name])
