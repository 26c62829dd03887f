#!/usr/bin/env bash
# Regenerate every parity fixture in tests/golden/ and the state-dict listings in
# tests/fixtures/statedicts/ from the official chatterbox-tts 0.1.7.
set -euo pipefail
cd "$(dirname "$0")"
REFENV="${NUTQ_REFENV:-${XDG_CACHE_HOME:-$HOME/.cache}/nutq-refenv}"
PY="$REFENV/venv/bin/python"
[ -x "$PY" ] || { echo "reference env missing: run 'make refenv' first"; exit 1; }
for gen in *.py; do
  case "$gen" in common.py|statedicts.py|t3_load.py) continue ;; esac  # t3_load.py: a check, not a fixture
  name="${gen%.py}"
  echo "== $name"
  "$PY" "$gen" --out "../../tests/golden/$name.safetensors"
done
echo "== statedicts"
"$PY" statedicts.py --out ../../tests/fixtures/statedicts
