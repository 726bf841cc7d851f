"""Does the installed llama.cpp execute on this CPU? Checked in a child process, so a build that uses
instructions the CPU (or its hypervisor) does not allow ends with a clear message, not a dead caller.

    python -m fatigue_llm.llm.cpucheck      # exit 0 and one line per kernel checked, else exit 1

The child loads the embedded SmolLM2 GGUF the way the llm node does (no mmap, so weights are repacked
for the CPU's SIMD kernels) as shipped (Q4_1) and requantized to Q8_0 and Q4_0, and decodes a few
tokens with each: the kernels that a native build on an AMX-reporting Xeon dies in (SIGILL).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CHECK_QUANTS = ("as_shipped", "q8_0", "q4_0")
PROMPT = "The driver looks tired, so"
DECODE_TOKENS = 4
REBUILD_HINT = "rebuild it with the portable flags: rm .venv/.setup-stamp && make setup (scripts/build_llama.sh)"


@dataclass(frozen=True)
class CpuCheck:
    ok: bool
    summary: str   # one line: what ran, or why it failed
    output: str    # the child's output (system info, one line per kernel)


def exit_reason(code: int) -> str:
    """'exit code 3' or 'killed by signal SIGILL (-4)'."""
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name} ({code})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def cpu_fingerprint() -> str:
    """The CPU model and the feature flags the kernel reports (what a build's instructions depend on)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    wanted = [line for line in lines if line.startswith(("model name", "flags"))][:2]
    return hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:16]


def _marker() -> Path | None:
    """Where a passed check is remembered: beside the installed llama_cpp, per build and CPU."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return None
    package = Path(spec.origin).parent
    build = (package / "BUILD_KEY").read_text().strip() if (package / "BUILD_KEY").exists() else "unkeyed"
    return package / f"CPU_CHECK_OK-{build}-{cpu_fingerprint()}"  # a reinstall or another CPU checks anew


def check_llama_cpu_once(timeout_s: float = 300.0) -> CpuCheck:
    """``check_llama_cpu``, skipped when this very installation already passed on this CPU model."""
    marker = _marker()
    if marker is not None and marker.exists():
        return CpuCheck(True, f"llama.cpp passed on this CPU before ({marker.name})", "")
    result = check_llama_cpu(timeout_s)
    if result.ok and marker is not None:
        try:
            marker.write_text(result.summary + "\n")
        except OSError:
            pass  # a read-only install: check again next time
    return result


def check_llama_cpu(timeout_s: float = 300.0, command: list[str] | None = None) -> CpuCheck:
    """Run the child check (or ``command``, for tests) and say whether llama.cpp runs here."""
    command = command or [sys.executable, "-m", "fatigue_llm.llm.cpucheck", "--child"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as error:
        return CpuCheck(False, f"llama.cpp check did not finish within {timeout_s:.0f} s", str(error.stdout or ""))
    output = (done.stdout or "") + (done.stderr or "")
    if done.returncode == 0:
        kernels = [line for line in output.splitlines() if line.startswith("ok ")]
        return CpuCheck(True, f"llama.cpp runs on this CPU ({'; '.join(kernels)})", output)
    last = [line for line in output.splitlines() if line.strip()][-3:]
    return CpuCheck(False, f"the installed llama.cpp cannot execute on this CPU: the check process was "
                           f"{exit_reason(done.returncode)} ({' | '.join(last)}); {REBUILD_HINT}", output)


def _decode_once(model: Path) -> float:
    """Load ``model`` as the node does and greedily decode a few tokens; returns tokens/s."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model), n_ctx=128, n_threads=2, n_threads_batch=2, n_batch=64,
                          use_mmap=False, verbose=False)
    try:
        llm.eval(llm.tokenize(PROMPT.encode()))
        llm.eval([int(llm.scores[llm.n_tokens - 1].argmax())])  # first token: one-off warm-up
        started = time.perf_counter()
        for _ in range(DECODE_TOKENS):
            token = int(llm.scores[llm.n_tokens - 1].argmax())
            llm.eval([token])
        return DECODE_TOKENS / (time.perf_counter() - started)
    finally:
        llm.close()


def _child() -> int:
    import llama_cpp

    from fatigue_llm.intervention.convert import quantize_gguf
    from fatigue_llm.intervention.models import embedded_model_path

    print("system info:", llama_cpp.llama_print_system_info().decode(errors="replace").strip(), flush=True)
    shipped = embedded_model_path()
    with tempfile.TemporaryDirectory(prefix="fatigue-llm-cpucheck-") as tmp:
        for quant in CHECK_QUANTS:
            model = shipped if quant == "as_shipped" else quantize_gguf(shipped, Path(tmp) / f"{quant}.gguf", quant,
                                                                        allow_requantize=True)
            print(f"checking {quant} ...", flush=True)  # the last line seen if this kernel dies
            rate = _decode_once(model)
            print(f"ok {quant} {rate:.0f} tok/s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fatigue_llm.llm.cpucheck", description=__doc__.split("\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child()
    result = check_llama_cpu_once()
    print(result.summary, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
