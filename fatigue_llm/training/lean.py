"""Training in little memory on a CPU: what a QLoRA step needs beyond bitsandbytes and peft.

Measured on the TinyLlama-1.1B shape (r 16 on all projections, gradient checkpointing, 2 threads), the
process peak came from four places, none of them the 4-bit weights themselves:

1. **Quantizing at load.** bitsandbytes reads the bfloat16 checkpoint (2.2 GB of file pages) to quantize
   it. ``save_nf4`` writes the quantized model once (``fatigue-llm model quantize-nf4``); loading that
   maps 0.8 GB of packed weights and reads nothing else.
2. **peft's ``prepare_model_for_kbit_training``** upcasts every float parameter to float32: for TinyLlama
   the embeddings and lm_head alone grow by 0.5 GB. The upcast guards float16 training; under bfloat16
   (what the CPU computes in) ``prepare_4bit_base`` keeps them as they are.
3. **glibc's heap.** After the first large block is freed glibc raises its mmap threshold, so later
   dequantized weights and activations come from the heap, and freed heap memory stays resident: the step
   grew the process by 1.3 GB at 256 tokens. ``bound_heap`` pins the threshold so large blocks go back to
   the kernel when freed.
4. **Logits over the whole sequence.** The loss is on the answer only, yet the model projects every
   position onto the 32 000-token vocabulary (float32 for the loss: 0.13 GB per 1 000 positions, several
   times over with its gradient). ``answer_logits_trainer`` asks the model for the scored positions only
   (transformers' ``logits_to_keep``); the loss is the same number.

QLoRA's own two savings finish it: double-quantized NF4 block scales (the loader's ``BitsAndBytesConfig``)
and 8-bit AdamW moments (``training.optimizer: adamw_8bit``, bitsandbytes' optimizer through Trainer).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
from pathlib import Path

from fatigue_llm.training.data import IGNORE_INDEX

# mallopt(3) parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
HEAP_THRESHOLD_BYTES = 64 * 1024  # blocks from this size on are mmapped, and unmapped when freed
HEAP_ARENAS = 2                    # one per compute thread on these machines: fewer half-empty arenas


def bound_heap(threshold: int = HEAP_THRESHOLD_BYTES, arenas: int = HEAP_ARENAS) -> bool:
    """Make glibc return freed large blocks to the kernel at once (fixed mmap and trim thresholds, few
    arenas). False where the C library has no ``mallopt`` (not glibc): nothing changes there."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # setting either threshold by hand also turns off glibc's dynamic raising of the mmap threshold
    fixed = mallopt(_M_MMAP_THRESHOLD, threshold) == 1 and mallopt(_M_TRIM_THRESHOLD, threshold) == 1
    mallopt(_M_ARENA_MAX, arenas)
    return fixed


def prepare_4bit_base(model):
    """A bitsandbytes 4-bit model made ready for an adapter: every base weight frozen and kept in its dtype,
    and inputs to the first layer that require grad, so checkpointed layers (Trainer's
    ``gradient_checkpointing``) pass gradients on to the adapter. Returns ``model``.

    On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight for its inference kernel the first time the
    layer runs in eval mode without grad (Trainer's evaluation), for good; that kernel has no backward, so
    every training step after the first evaluation would pass no correct gradient through the frozen base
    (torch only warns), and the repacked weights are new memory beside the mapped checkpoint. Training
    models keep bitsandbytes' differentiable path."""
    from bitsandbytes.nn import Linear4bit

    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False
    model.enable_input_require_grads()
    return model


def save_nf4(source: Path, out: Path, dtype: str = "bfloat16") -> Path:
    """Quantize the float HF model in ``source`` to NF4 (bitsandbytes, ``dtype`` compute) and write it with
    its tokenizer to ``out``: written beside it first and renamed, so ``out`` is whole or absent."""
    from fatigue_llm.intervention.backends.transformers_backend import load_model
    from fatigue_llm.intervention.models import ModelError, is_nf4_checkpoint, resolve_model

    model_source = resolve_model(str(source))
    if model_source.kind != "hf":
        raise ModelError(f"{source}: quantize-nf4 needs a Hugging Face folder (config.json + *.safetensors)")
    if is_nf4_checkpoint(source):
        raise ModelError(f"{source}: already quantized (quantization_config in config.json)")
    if out.exists():
        raise ModelError(f"{out}: already exists; remove it or choose another --out")
    model, tokenizer = load_model(model_source, quantization="bnb_nf4", dtype=dtype)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial), safe_serialization=True)
    tokenizer.save_pretrained(str(partial))
    partial.rename(out)
    return out


def scored_positions(labels):
    """Sequence positions whose logits the loss reads (the next token is labelled in some row), as the 1-D
    index tensor ``logits_to_keep`` takes."""
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)


def answer_loss(outputs, labels, num_items_in_batch=None):
    """Next-token cross entropy on the logits of ``scored_positions(labels)``: transformers' causal-LM loss
    (float32 logits, summed over the labelled tokens, divided by ``num_items_in_batch`` or their count)."""
    import torch

    targets = labels[:, 1:][:, scored_positions(labels)].to(outputs.logits.device)
    logits = outputs.logits.float()
    total = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                              ignore_index=IGNORE_INDEX, reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
    if torch.is_tensor(count):
        count = count.to(total.device)
    return total / count


def answer_logits_trainer(base: type) -> type:
    """``base`` (a Trainer class) whose model computes logits at the scored positions only. Build it with
    ``compute_loss_func=answer_loss`` (Trainer then scales the loss across accumulation steps and processes
    as it does for its own) and ``prediction_loss_only``: evaluation logits cover those positions only."""

    class AnswerLogitsTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = {**inputs, "logits_to_keep": scored_positions(inputs["labels"])}
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return AnswerLogitsTrainer
