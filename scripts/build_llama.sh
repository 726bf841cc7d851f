#!/usr/bin/env bash
# Build and install llama-cpp-python for any x86-64 CPU from Haswell / Zen 1 on (x86-64-v3).
#
# Why not pip's default: llama.cpp's CMake defaults to GGML_NATIVE=ON (-march=native), and on an
# Intel Xeon whose CPUID reports AMX that the hypervisor has not enabled, the native build (and the
# AMX buffer type it selects at run time) dies with SIGILL. pip then caches that wheel under a key
# that ignores CMAKE_ARGS and the CPU, so one machine's native build breaks the next machine.
#
# What we do instead: an explicit instruction-set list (AVX, AVX2, FMA, F16C, BMI2; no AVX-512, no
# AMX), built with pip's cache off into our own wheel directory keyed by the version, the flags and
# the compiler, then installed from there. README "Portable llama.cpp build" has the measurements.
#
# Usage: scripts/build_llama.sh VENV [--native]   (--native: a -march=native build, for the bench only,
#        installed into VENV; never use it for the project's .venv)
set -euo pipefail
venv=$(cd "${1:?usage: build_llama.sh VENV [--native]}" && pwd)
mode=${2:-portable}
here=$(cd "$(dirname "$0")/.." && pwd)
py="$venv/bin/python"
version=$(sed -n 's/^llama-cpp-python==\([0-9.]*\).*/\1/p' "$here/requirements-llama.txt")
[ -n "$version" ] || { echo "build_llama: no llama-cpp-python==X pin in requirements-llama.txt" >&2; exit 2; }

portable_flags="-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF
 -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
 -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF
 -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
 -DGGML_OPENMP=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF"
case "$mode" in
  portable) flags=$portable_flags ;;
  --native) flags="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF"
            # a native wheel is only valid on this very CPU: key it by the CPU model and flags too
            flags="$flags #cpu=$(grep -m1 -E '^(model name|flags)' /proc/cpuinfo | md5sum | cut -c1-12)" ;;
  *) echo "build_llama: unknown mode '$mode' (want --native or nothing)" >&2; exit 2 ;;
esac
flags=$(echo "$flags" | tr -s ' \n' ' ')
cmake_args=${flags%%#*}

cc_id=$(${CC:-cc} --version 2>/dev/null | head -1)
key=$(printf '%s\n%s\n%s\n' "$version" "$flags" "$cc_id" | sha256sum | cut -c1-16)
cache_root=${FATIGUE_LLM_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fatigue_llm/wheels}
wheel_dir="$cache_root/llama-cpp-python-$version-${mode#--}-$key"

# find the installed build's key without loading the native library
installed_key=$("$py" -c 'import importlib.util as u, pathlib; s = u.find_spec("llama_cpp"); p = pathlib.Path(s.origin).parent / "BUILD_KEY" if s else None; print(p.read_text().strip() if p and p.exists() else "")' 2>/dev/null || true)
if [ "$installed_key" = "$key" ]; then
  echo "[setup] llama-cpp-python $version ($mode build $key) already installed"
  exit 0
fi

if ! ls "$wheel_dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "[setup] building llama-cpp-python $version from source ($mode: $cmake_args) - 4 to 9 min on 2 cores"
  mkdir -p "$wheel_dir.tmp"
  log="$wheel_dir.log"
  mkdir -p "$(dirname "$log")"
  CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$py" -m pip --disable-pip-version-check wheel --no-cache-dir --no-deps --no-binary llama-cpp-python \
    -w "$wheel_dir.tmp" "llama-cpp-python==$version" >"$log" 2>&1 ||
    { tail -40 "$log"; echo "build_llama: build failed, full log in $log" >&2; exit 1; }
  rm -rf "$wheel_dir" && mv "$wheel_dir.tmp" "$wheel_dir"   # only a finished build becomes visible
fi

"$py" -m pip --disable-pip-version-check -q install --no-deps --force-reinstall --no-index \
  --find-links "$wheel_dir" "llama-cpp-python==$version"
"$py" -c 'import importlib.util as u, pathlib, sys
(pathlib.Path(u.find_spec("llama_cpp").origin).parent / "BUILD_KEY").write_text(sys.argv[1] + "\n")' "$key"
echo "[setup] llama-cpp-python $version installed ($mode build $key)"
