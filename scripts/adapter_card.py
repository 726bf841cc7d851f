#!/usr/bin/env python3
"""Write the card of the bundled adapter: how it was made and what it scores as the car runs it.

    scripts/adapter_card.py RUN_DIR ADAPTER.gguf

RUN_DIR is the training run (run.json, eval.json from ``--mode compare``). The card, ADAPTER.json beside
the GGUF, holds the command that rebuilds it, the data and training settings, the training losses, the
transformers comparison, and the held-out cases answered by the llm node's own engine (llama.cpp, the
embedded Q4_1 base) with and without the adapter, plus the GGUF's SHA-256.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

REBUILD = "make adapter"


def _car_results(config, adapter: Path, limit: int) -> list[dict]:
    from fatigue_llm.intervention.backends.transformers_backend import load_model
    from fatigue_llm.intervention.models import resolve_model
    from fatigue_llm.llm.config import LlmConfig
    from fatigue_llm.training.evaluate import evaluate_engine, held_out_cases

    _, tokenizer = load_model(resolve_model(config.model.path))
    cases = held_out_cases(config, tokenizer, limit)
    results = []
    for label, lora in (("embedded Q4_1, no adapter", "none"), ("embedded Q4_1 + this adapter", str(adapter))):
        llm = LlmConfig(backend="llamacpp", lora_path=lora, retrieval_k=config.data.retrieval_k,
                        generation_deadline=60.0)  # retrieval as in training (the node's own store)
        result = evaluate_engine(llm, cases, label)
        result["samples"] = [f"{r['level']} {r['action']}: {r['message']}" for r in result.pop("rows")[:5]]
        results.append(result)
    return results


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    run, adapter = Path(argv[0]), Path(argv[1])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fatigue_llm.training.config import load_run_config
    from fatigue_llm.training.export import sha256_file

    summary = json.loads((run / "run.json").read_text())
    config = load_run_config(summary["config"]["source"])
    compare = json.loads((run / "eval.json").read_text()) if (run / "eval.json").is_file() else None
    card = {
        "adapter": adapter.name, "sha256": sha256_file(adapter), "bytes": adapter.stat().st_size,
        "rebuild": REBUILD, "run_config": summary["config"]["source"], "data": summary["data"],
        "lora": summary["config"]["lora"], "training": summary["config"]["training"], "final": summary["final"],
        "transformers_compare": None if compare is None else [
            {k: v for k, v in r.items() if k != "rows"} for r in compare["results"]],
        "llamacpp_engine": _car_results(config, adapter, limit=60),
    }
    out = adapter.with_suffix(".json")
    with tempfile.NamedTemporaryFile("w", dir=out.parent, delete=False, suffix=".tmp") as handle:
        handle.write(json.dumps(card, indent=2) + "\n")
    Path(handle.name).replace(out)
    for result in card["llamacpp_engine"]:
        print(f"{result['model']}: level {result['level_accuracy']:.2f}, action {result['action_accuracy']:.2f}, "
              f"over-escalated {result['over_escalated']:.2f}, "
              f"as written {result['accepted_as_written']:.2f}, p50 {result['latency_s_p50']:.2f} s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
