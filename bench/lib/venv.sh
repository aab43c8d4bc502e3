#!/usr/bin/env bash
# Creates (or reuses) the benchmark virtualenv and prints its path on stdout.
#
#   VENV=$(bench/lib/venv.sh)      # then "$VENV/bin/python" ...
#
# Location: "${SCORER_CACHE_DIR:-$HOME/.cache/scorer-ci}/bench-venv". The venv is
# reused while bench/requirements.txt is unchanged (its sha256 is stamped inside
# the venv); any change reinstalls the pinned set. Progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/../requirements.txt"
cache="${SCORER_CACHE_DIR:-$HOME/.cache/scorer-ci}"
venv="$cache/bench-venv"
python="${BENCH_PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
  echo "venv.sh: $python not found; install Python 3 (3.11+)" >&2
  exit 1
fi

want="$(sha256sum "$req" | cut -d' ' -f1)"
stamp="$venv/.requirements.sha256"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$venv"
  exit 0
fi

mkdir -p "$cache"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "venv.sh: creating $venv" >&2
  "$python" -m venv "$venv" >&2
fi
echo "venv.sh: installing bench/requirements.txt into $venv (once)" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
echo "$want" >"$stamp"
echo "$venv"
