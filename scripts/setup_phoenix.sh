#!/usr/bin/env bash
# Build the Phoenix integration-test environment: a separate virtualenv with a pinned
# arize-phoenix, kept OUT of the project's own venv (Phoenix pins many packages that could
# clash with the pipeline's). ~45 s cold, ~850 MB. Idempotent: a complete venv is reused.
#   scripts/setup_phoenix.sh            -> .tools/phoenix-venv
#   PHOENIX_VENV=/some/dir scripts/setup_phoenix.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${PHOENIX_VENV:-$ROOT/.tools/phoenix-venv}"
PHOENIX_VERSION="20.26.1"
PY="${PYTHON:-python3}"

READY="$VENV/.phoenix-ready"
if [[ -f "$READY" && "$(cat "$READY")" == "$PHOENIX_VERSION" && -x "$VENV/bin/python" ]]; then
  echo "phoenix venv ready: $VENV (arize-phoenix $PHOENIX_VERSION)"
  exit 0
fi

# The marker file is written last, so an interrupted install is never mistaken for a usable
# venv (the tests look for it); a rerun starts over from a clean venv.
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "arize-phoenix==$PHOENIX_VERSION"
"$VENV/bin/python" -c "import phoenix.server.main, grpc.aio"
echo "$PHOENIX_VERSION" >"$READY"
echo "phoenix venv ready: $VENV (arize-phoenix $PHOENIX_VERSION)"
