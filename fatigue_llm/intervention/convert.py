"""``fatigue-llm model convert|verify|verify-attention``: our own HF Llama -> GGUF conversion, quantization, checks.

convert: read a Hugging Face Llama folder (``config.json``, ``*.safetensors``, ``tokenizer.json`` or a
SentencePiece ``tokenizer.model``), write an F16 (or F32) GGUF with the ``gguf`` package, then
quantize it through llama.cpp's own ``llama_model_quantize`` (q4_0, q8_0). What the writer does:

- tensor names: HF ``model.layers.{i}.self_attn.q_proj.weight`` -> GGUF ``blk.{i}.attn_q.weight`` etc.
  (``TENSOR_MAP``); ``lm_head`` is omitted when tied to the embeddings (llama.cpp reuses them);
- Q and K rows are permuted from the HF rotate-half RoPE layout to llama.cpp's interleaved pairs;
- 1-D tensors (norms) stay F32, as llama.cpp expects;
- tokenizer metadata: byte-level BPE (``gpt2``: tokens, types, merges, pre-tokenizer name) or
  SentencePiece (``llama``: pieces, scores, types), special token ids and the chat template.

verify: run fixed prompts through model A and model B (each a GGUF via llama.cpp with ``logits_all`` or an
HF folder via transformers), teacher-forced on the same token ids, and report the max / mean absolute
logit difference and the greedy (argmax) token agreement per position.

verify-attention: load an HF folder twice in transformers (float32), with ``attn_implementation="eager"`` and
``"sdpa"``, and compare the prefill logits and 16 greedy tokens decoded with the KV cache (the GQA path of
TinyLlama's 32 query / 4 KV heads included): the two implementations must agree to < 1e-4.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

QUANT_TYPES = ("f32", "f16", "q8_0", "q4_0")
LLAMA_FTYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7}
VERIFY_PROMPTS = (
    "The driver has been awake for eighteen hours and the eyes close more and more often.",
    "Please take a break at the next rest area. Fresh air helps only for a short time.",
    '{"level": "WARNING", "action": "audio_chime", "message": "Your eyes close often."}',
    "PERCLOS 0.22, blink rate 31/min, awake 17.0 h, driving 90 min",
)
LAYER_MAP = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
TOP_MAP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
# SentencePiece piece types -> GGUF token types
SPM_TYPES = {"normal": 1, "unknown": 2, "control": 3, "user_defined": 4, "unused": 5, "byte": 6}


class ConvertError(RuntimeError):
    """A model folder or file cannot be converted or compared; the message names the path."""


# --- reading the HF folder --------------------------------------------------------------------------

def read_hf_config(hf_dir: Path) -> dict:
    """``config.json`` of a Llama folder. Raises ConvertError when absent or not a Llama model."""
    path = hf_dir / "config.json"
    if not path.is_file():
        raise ConvertError(f"{hf_dir} is not a Hugging Face model folder (no config.json)")
    config = json.loads(path.read_text())
    arch = config.get("model_type")
    if arch not in ("llama", "mistral"):
        raise ConvertError(f"{path}: model_type {arch!r} is not supported (llama only)")
    return config


def tensor_name(hf_name: str) -> str:
    """GGUF name of an HF Llama tensor. Raises ConvertError for an unknown tensor."""
    if hf_name in TOP_MAP:
        return TOP_MAP[hf_name]
    parts = hf_name.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in LAYER_MAP:
        return f"blk.{int(parts[2])}.{LAYER_MAP[parts[3]]}"
    raise ConvertError(f"unexpected tensor {hf_name!r} in a Llama model")


def permute_rope(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder Q/K rows from HF's rotate-half layout to llama.cpp's interleaved RoPE pairs."""
    rows = weight.shape[0]
    return (weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def iter_hf_tensors(hf_dir: Path):
    """(name, float32 numpy array) for every tensor in the folder's safetensors files."""
    from safetensors import safe_open

    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise ConvertError(f"{hf_dir} has no *.safetensors files")
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                yield name, handle.get_tensor(name).float().numpy()


# --- tokenizer metadata ------------------------------------------------------------------------------

def _pre_tokenizer_name(pre: dict | None) -> str:
    """llama.cpp's name for an HF byte-level pre-tokenizer (SmolLM's digits + byte level, or GPT-2)."""
    if not pre:
        return "default"
    kinds = [p.get("type") for p in pre.get("pretokenizers", [pre])]
    digits = [p for p in pre.get("pretokenizers", []) if p.get("type") == "Digits"]
    if kinds == ["Digits", "ByteLevel"] and digits[0].get("individual_digits"):
        return "smollm"
    if kinds == ["ByteLevel"]:
        return "gpt-2"  # llama.cpp's name; it rejects "gpt2" (e.g. SmolLM2's tokenizer as read from its GGUF)
    return "default"


def _bpe_vocab(tokenizer_json: dict) -> tuple[list[str], list[int], list[str]]:
    model = tokenizer_json["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in tokenizer_json.get("added_tokens", [])}
    for content, token in added.items():
        vocab.setdefault(content, token["id"])
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [5] * size  # unused until filled
    for text, index in vocab.items():
        tokens[index] = text
        token = added.get(text)
        types[index] = 1 if token is None else (3 if token.get("special") else 4)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, types, merges


def add_tokenizer(writer, hf_dir: Path, vocab_size: int) -> None:
    """Write the tokenizer metadata of ``hf_dir`` into a GGUF writer.

    Raises ConvertError when there is no usable tokenizer or its size differs from the model's.
    """
    tokenizer_json = hf_dir / "tokenizer.json"
    spm = hf_dir / "tokenizer.model"
    config_path = hf_dir / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    if tokenizer_json.is_file() and json.loads(tokenizer_json.read_text())["model"]["type"] == "BPE" \
            and not spm.is_file():
        data = json.loads(tokenizer_json.read_text())
        tokens, types, merges = _bpe_vocab(data)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_pre_tokenizer_name(data.get("pre_tokenizer")))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
    elif spm.is_file():
        import sentencepiece

        processor = sentencepiece.SentencePieceProcessor(model_file=str(spm))
        tokens, scores, types = [], [], []
        for index in range(processor.vocab_size()):
            tokens.append(processor.id_to_piece(index))
            scores.append(processor.get_score(index))
            kind = ("unknown" if processor.is_unknown(index) else "control" if processor.is_control(index)
                    else "unused" if processor.is_unused(index) else "byte" if processor.is_byte(index)
                    else "normal")
            types.append(SPM_TYPES[kind])
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
    else:
        raise ConvertError(f"{hf_dir} has neither a BPE tokenizer.json nor a SentencePiece tokenizer.model")
    if len(tokens) != vocab_size:
        raise ConvertError(f"{hf_dir}: tokenizer has {len(tokens)} tokens, the model {vocab_size}")
    ids = {token: index for index, token in enumerate(tokens)}
    for key, add in (("bos_token", writer.add_bos_token_id), ("eos_token", writer.add_eos_token_id),
                     ("pad_token", writer.add_pad_token_id), ("unk_token", writer.add_unk_token_id)):
        value = tok_config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if value in ids:
            add(ids[value])
    writer.add_add_bos_token(bool(tok_config.get("add_bos_token", False)))
    template = tok_config.get("chat_template")
    if not template and (hf_dir / "chat_template.jinja").is_file():
        template = (hf_dir / "chat_template.jinja").read_text()
    if template:
        writer.add_chat_template(template)


# --- convert and quantize ------------------------------------------------------------------------------

def write_gguf(hf_dir: str | Path, out_path: str | Path, out_type: str = "f16") -> Path:
    """Write ``hf_dir`` (a Llama folder) as an F16 or F32 GGUF at ``out_path``.

    Raises ConvertError for a missing/unsupported folder or tokenizer, ValueError for a bad ``out_type``.
    """
    import gguf

    if out_type not in ("f16", "f32"):
        raise ValueError(f"out_type must be f16 or f32, got {out_type!r}")
    hf_dir, out_path = Path(hf_dir), Path(out_path)
    config = read_hf_config(hf_dir)
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_head)
    hidden = config["hidden_size"]
    writer = gguf.GGUFWriter(str(out_path), arch="llama")
    writer.add_name(hf_dir.name)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(config.get("head_dim", hidden // n_head))
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-5))
    # transformers >= 5 writes rope_theta inside rope_parameters (SmolLM2: 100000, not the default 10000)
    rope = config.get("rope_parameters") or {}
    writer.add_rope_freq_base(float(config.get("rope_theta", rope.get("rope_theta", 10000.0))))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(LLAMA_FTYPES[out_type])
    add_tokenizer(writer, hf_dir, config["vocab_size"])
    tied = config.get("tie_word_embeddings", False)
    for name, array in iter_hf_tensors(hf_dir):
        if name == "lm_head.weight" and tied:
            continue
        if name.endswith("self_attn.q_proj.weight"):
            array = permute_rope(array, n_head)
        elif name.endswith("self_attn.k_proj.weight"):
            array = permute_rope(array, n_kv)
        dtype = np.float16 if out_type == "f16" and array.ndim > 1 else np.float32
        writer.add_tensor(tensor_name(name), np.ascontiguousarray(array.astype(dtype)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_path


def quantize_gguf(src: str | Path, dst: str | Path, quant: str, n_threads: int = 2,
                  allow_requantize: bool = False) -> Path:
    """Quantize a GGUF with llama.cpp (``llama_model_quantize``). Raises ConvertError on failure.

    ``allow_requantize`` accepts an already quantized source (lossy twice: checks and tests only)."""
    import ctypes

    import llama_cpp
    from llama_cpp._logger import set_verbose

    set_verbose(False)  # llama.cpp's per-tensor progress lines
    if quant not in LLAMA_FTYPES:
        raise ConvertError(f"unknown quantization {quant!r}; one of {list(LLAMA_FTYPES)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = n_threads
    params.ftype = LLAMA_FTYPES[quant]
    params.allow_requantize = allow_requantize
    status = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if status != 0 or not Path(dst).is_file():
        raise ConvertError(f"llama.cpp could not quantize {src} to {quant} (status {status})")
    return Path(dst)


def convert(hf_dir: str | Path, out: str | Path, quant: str = "q4_0", n_threads: int = 2) -> Path:
    """HF Llama folder -> GGUF of type ``quant`` (f32, f16, q8_0, q4_0). Returns ``out``.

    The F16 intermediate goes to a temporary file beside ``out`` and is removed afterwards.
    Raises ConvertError / ValueError (see ``write_gguf``, ``quantize_gguf``).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if quant in ("f16", "f32"):
        return write_gguf(hf_dir, out, quant)
    handle, tmp = tempfile.mkstemp(suffix=".f16.gguf", dir=out.parent)
    os.close(handle)
    try:
        write_gguf(hf_dir, tmp, "f16")
        return quantize_gguf(tmp, out, quant, n_threads)
    finally:
        Path(tmp).unlink(missing_ok=True)


# --- verify -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VerifyReport:
    positions: int
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    greedy_agreement: float
    tokenizer_agreement: float  # fraction of prompts both models tokenize identically


class _Scorer:
    """Teacher-forced logits of one model (GGUF through llama.cpp, HF folder through transformers)."""

    def __init__(self, path: Path, n_threads: int) -> None:
        from fatigue_llm.intervention.models import ModelError, resolve_model

        try:
            self.source = resolve_model(path)
        except ModelError as error:
            raise ConvertError(str(error)) from None
        if self.source.kind == "gguf":
            from fatigue_llm.intervention.backends.llamacpp import LlamaCppBackend

            self.backend = LlamaCppBackend(self.source.path, n_threads=n_threads, n_ctx=512, logits_all=True)
        else:
            from fatigue_llm.intervention.backends.transformers_backend import TransformersBackend

            self.backend = TransformersBackend(self.source, n_threads=n_threads)

    def tokenize(self, text: str) -> list[int]:
        if self.source.kind == "gguf":
            return self.backend.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        return list(self.backend.tokenizer(text, add_special_tokens=False).input_ids)

    def logits(self, tokens: list[int]) -> np.ndarray:
        return np.asarray(self.backend.logits(tokens), dtype=np.float32)

    def close(self) -> None:
        self.backend.close()


def verify(a: str | Path, b: str | Path, prompts=VERIFY_PROMPTS, n_threads: int = 2) -> VerifyReport:
    """Compare model ``a`` with reference ``b`` on ``prompts`` (teacher-forced on ``b``'s tokens).

    Raises ConvertError for a missing or unusable model and when the vocabularies differ in size.
    """
    scorer_a, scorer_b = _Scorer(Path(a), n_threads), None
    try:
        scorer_b = _Scorer(Path(b), n_threads)
        diffs, agree, same_tokens, count = [], 0, 0, 0
        for prompt in prompts:
            tokens = scorer_b.tokenize(prompt)
            same_tokens += int(scorer_a.tokenize(prompt) == tokens)
            la, lb = scorer_a.logits(tokens), scorer_b.logits(tokens)
            if la.shape != lb.shape:
                raise ConvertError(f"logit shapes differ: {a} {la.shape} vs {b} {lb.shape}")
            diffs.append(np.abs(la - lb))
            agree += int(np.sum(la.argmax(-1) == lb.argmax(-1)))
            count += len(tokens)
    finally:
        scorer_a.close()
        if scorer_b is not None:
            scorer_b.close()
    every = np.concatenate([d.reshape(-1) for d in diffs])
    return VerifyReport(positions=count, max_abs_logit_diff=float(every.max()),
                        mean_abs_logit_diff=float(every.mean()), greedy_agreement=agree / max(count, 1),
                        tokenizer_agreement=same_tokens / max(len(prompts), 1))


# --- attention implementations -------------------------------------------------------------------------------

ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")
ATTENTION_MAX_DIFF = 1e-4  # what the sources claim for eager vs sdpa in float32


def _greedy_with_cache(model, ids, new_tokens: int):
    """(prefill logits, greedy tokens, per-step logits): one prefill, then ``new_tokens`` single-token steps that
    reuse the KV cache (``past_key_values``), argmax each time (no EOS stop: the same length for both)."""
    import torch

    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        prefill = out.logits[0].float().numpy()
        past, logits, tokens, steps = out.past_key_values, out.logits[:, -1], [], []
        for _ in range(new_tokens):
            token = int(logits[0].argmax())
            tokens.append(token)
            steps.append(logits[0].float().numpy())
            out = model(input_ids=torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1]
    return prefill, tokens, steps


def verify_attention(hf_dir: str | Path, prompts=VERIFY_PROMPTS, new_tokens: int = 16, n_threads: int = 2) -> dict:
    """Compare transformers' eager and SDPA attention on the HF folder ``hf_dir`` (both float32): max / mean
    absolute difference of the prefill logits over ``prompts``, and whether ``new_tokens`` greedy tokens decoded
    with the KV cache are identical (with the largest logit difference over the decode steps, up to the first
    differing token). Returns the report dict; ``passed`` = identical tokens and max differences < 1e-4.

    Raises ConvertError for a missing or non-Llama folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir = Path(hf_dir)
    config = read_hf_config(hf_dir)
    torch.set_num_threads(n_threads)
    started = time.monotonic()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ConvertError(f"{hf_dir}: cannot load the tokenizer ({error})") from None
    token_ids = [tokenizer(prompt, add_special_tokens=False).input_ids for prompt in prompts]
    results, used = {}, {}
    for implementation in ATTENTION_IMPLEMENTATIONS:
        model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32, local_files_only=True,
                                                     attn_implementation=implementation)
        model.eval()
        used[implementation] = model.config._attn_implementation
        results[implementation] = [_greedy_with_cache(model, torch.tensor([ids]), new_tokens) for ids in token_ids]
        del model
    prefill_diffs, step_diffs, mismatched = [], [], 0
    for (pre_e, tok_e, steps_e), (pre_s, tok_s, steps_s) in zip(results["eager"], results["sdpa"], strict=True):
        prefill_diffs.append(np.abs(pre_e - pre_s).reshape(-1))
        same = next((i for i, (a, b) in enumerate(zip(tok_e, tok_s, strict=True)) if a != b), len(tok_e))
        mismatched += int(tok_e != tok_s)
        step_diffs += [float(np.abs(a - b).max()) for a, b in zip(steps_e[:same + 1], steps_s[:same + 1],
                                                                   strict=False)]
    every = np.concatenate(prefill_diffs)
    report = {
        "model": str(hf_dir), "implementations": used,
        "num_attention_heads": config["num_attention_heads"],
        "num_key_value_heads": config.get("num_key_value_heads", config["num_attention_heads"]),
        "prompts": len(token_ids), "positions": int(sum(len(ids) for ids in token_ids)),
        "prefill_max_abs_logit_diff": float(every.max()), "prefill_mean_abs_logit_diff": float(every.mean()),
        "new_tokens": new_tokens, "decode_max_abs_logit_diff": max(step_diffs, default=0.0),
        "greedy_prompts_differing": mismatched, "greedy_identical": mismatched == 0,
        "max_allowed_diff": ATTENTION_MAX_DIFF, "seconds": round(time.monotonic() - started, 1),
    }
    report["passed"] = bool(report["greedy_identical"] and report["prefill_max_abs_logit_diff"] < ATTENTION_MAX_DIFF
                            and report["decode_max_abs_logit_diff"] < ATTENTION_MAX_DIFF
                            and used == {name: name for name in ATTENTION_IMPLEMENTATIONS})
    return report


# --- CLI ---------------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fatigue-llm model",
                                     description="convert / verify / quantize on-device models")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="HF Llama folder -> GGUF (our writer + llama.cpp quantization)")
    conv.add_argument("hf_dir", help="Hugging Face Llama folder (config.json, *.safetensors, tokenizer)")
    conv.add_argument("--out", required=True, help="output .gguf file")
    conv.add_argument("--quant", choices=QUANT_TYPES, default="q4_0")
    conv.add_argument("--threads", type=int, default=2)
    ver = sub.add_parser("verify", help="compare model A with reference B on fixed prompts")
    ver.add_argument("a", help="GGUF file or HF folder")
    ver.add_argument("b", help="reference: GGUF file or HF folder")
    ver.add_argument("--threads", type=int, default=2)
    ver.add_argument("--min-agreement", type=float, default=0.0,
                     help="exit 1 when the greedy-token agreement is below this (0..1)")
    ver.add_argument("--json", action="store_true", help="print the report as JSON")
    att = sub.add_parser("verify-attention", help="transformers eager vs SDPA attention on an HF folder (float32)")
    att.add_argument("hf_dir", help="Hugging Face Llama folder")
    att.add_argument("--new-tokens", type=int, default=16, help="greedy tokens decoded with the KV cache")
    att.add_argument("--threads", type=int, default=2)
    att.add_argument("--json", action="store_true", help="print the report as JSON")
    nf4 = sub.add_parser("quantize-nf4", help="HF folder -> the same model saved in bitsandbytes NF4: a QLoRA base "
                                          "that loads without reading the float weights")
    nf4.add_argument("hf_dir", help="Hugging Face Llama folder with float weights")
    nf4.add_argument("--out", required=True, help="output folder (must not exist)")
    nf4.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="compute dtype")
    rand = sub.add_parser("random", help="write a random-weight Llama (TinyLlama shape) for benchmarks")
    rand.add_argument("out_dir")
    rand.add_argument("--shape", choices=("tinyllama", "tiny"), default="tinyllama")
    rand.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fatigue-llm model``. Exit 2 on a bad path or model, 1 on a failed verify /
    verify-attention."""
    from fatigue_llm.intervention.models import ModelError, make_random_llama

    args = _parser().parse_args(argv)
    try:
        if args.command == "convert":
            hf_dir = Path(args.hf_dir)
            if not hf_dir.is_dir():
                raise ConvertError(f"{hf_dir}: no such folder")
            out = convert(hf_dir, args.out, args.quant, args.threads)
            print(f"wrote {out} ({args.quant}, {out.stat().st_size / 2**20:.1f} MiB)")
            return 0
        if args.command == "verify":
            report = verify(args.a, args.b, n_threads=args.threads)
            if args.json:
                print(json.dumps(asdict(report), indent=2))
            else:
                print(f"{args.a} vs {args.b}: greedy agreement {report.greedy_agreement:.3f} over "
                      f"{report.positions} positions, max |dlogit| {report.max_abs_logit_diff:.4f}, mean "
                      f"{report.mean_abs_logit_diff:.5f}, tokenizers agree on "
                      f"{report.tokenizer_agreement:.0%} of prompts")
            ok = math.isfinite(report.greedy_agreement) and report.greedy_agreement >= args.min_agreement
            return 0 if ok else 1
        if args.command == "verify-attention":
            report = verify_attention(args.hf_dir, new_tokens=args.new_tokens, n_threads=args.threads)
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                print(f"{args.hf_dir}: eager vs sdpa ({report['num_attention_heads']}/"
                      f"{report['num_key_value_heads']} heads), prefill max |dlogit| "
                      f"{report['prefill_max_abs_logit_diff']:.2e} over {report['positions']} positions, decode "
                      f"{report['decode_max_abs_logit_diff']:.2e}, {report['new_tokens']} greedy tokens "
                      f"{'identical' if report['greedy_identical'] else 'DIFFER'} on {report['prompts']} prompts "
                      f"({'pass' if report['passed'] else 'FAIL'}, limit {report['max_allowed_diff']:g})")
            return 0 if report["passed"] else 1
        if args.command == "quantize-nf4":
            from fatigue_llm.training.lean import save_nf4

            hf_dir = Path(args.hf_dir)
            if not hf_dir.is_dir():
                raise ConvertError(f"{hf_dir}: no such folder")
            out = save_nf4(hf_dir, Path(args.out), args.dtype)
            size = sum(f.stat().st_size for f in out.glob("*.safetensors")) / 2**20
            print(f"wrote {out} (NF4, {size:.1f} MiB of weights; train on it with model.quantization: nf4)")
            return 0
        out = make_random_llama(args.out_dir, args.shape, args.seed)
        print(f"wrote random {args.shape} Llama to {out}")
        return 0
    except (ConvertError, ModelError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
