# shellcheck shell=bash
# .ci/lib.sh: the preamble every CI script shares. Source it after setting
# CI_NAME (the name in failure messages); it defines:
#
#   ROOT, CACHE            the repository and the cache ($SCORER_CACHE_DIR,
#                          default ~/.cache/scorer-ci)
#   note MESSAGE           a section heading
#   fatal MESSAGE          print "CI_NAME: FAILED: MESSAGE" and exit 1
#   as_root CMD...         run as root (directly, or sudo -n)
#   apt_need CMD PKG       CMD on PATH, else apt-get install PKG
#   venv_need DIR SPEC [CHECK]   a virtualenv at DIR holding the pip
#                          requirements SPEC (CHECK: a command in it that must
#                          run), rebuilt when SPEC changes
#   cargo_tool_need ...    a pinned cargo-installed tool (.ci/cargo-tool.sh)
#   check NAME CMD...      run a check, remembering whether it passed
#   summarize_checks       print the tally; exit 1 if any check failed
#
# A tool that cannot be had fails with what to install: nothing is skipped.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC2034 # used by the scripts that source this
CACHE="${SCORER_CACHE_DIR:-$HOME/.cache/scorer-ci}"

note() { printf '\n=== %s\n' "$*"; }

fatal() {
  printf '\n%s: FAILED: %s\n' "${CI_NAME:-ci}" "$*" >&2
  exit 1
}

as_root() {
  if [[ "$(id -u)" == 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    return 1
  fi
}

apt_need() {
  local cmd="$1" pkg="$2"
  command -v "$cmd" >/dev/null 2>&1 && return 0
  printf 'installing %s (Debian package %s)\n' "$cmd" "$pkg"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg"; then
    as_root apt-get update -q || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg" || true
  fi
  command -v "$cmd" >/dev/null 2>&1 ||
    fatal "$cmd is missing and could not be installed: run 'apt-get install $pkg' as root"
}

# Built in place (a venv's scripts name its path); .spec is written last, so
# an interrupted build is redone next time.
venv_need() {
  local dir="$1" spec="$2" check="${3:-python}"
  if [[ -f "$dir/.spec" && "$(cat "$dir/.spec")" == "$spec" ]] &&
    "$dir/bin/$check" --version >/dev/null 2>&1; then
    return 0
  fi
  command -v python3 >/dev/null 2>&1 ||
    fatal "python3 is missing (needed for $spec): install Python 3 with venv (Debian: apt-get install python3 python3-venv)"
  printf 'installing %s into %s\n' "$spec" "$dir"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  python3 -m venv "$dir" ||
    fatal "'python3 -m venv $dir' failed: install Python 3 with venv (Debian: apt-get install python3-venv)"
  # shellcheck disable=SC2086 # SPEC is a list of requirements
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input $spec ||
    fatal "pip could not install $spec from the Python package index"
  "$dir/bin/$check" --version >/dev/null 2>&1 ||
    fatal "$check does not run from $dir: delete it and rerun"
  printf '%s' "$spec" >"$dir/.spec"
}

# shellcheck source=.ci/cargo-tool.sh
source "$ROOT/.ci/cargo-tool.sh"

# Checks run on, so one run shows every failure; the tally decides the exit.
FAILED=()
PASSED=()
check() {
  local name="$1"
  shift
  note "$name"
  if "$@"; then
    PASSED+=("$name")
  else
    printf '>>> %s FAILED\n' "$name" >&2
    FAILED+=("$name")
  fi
}

summarize_checks() {
  note "summary"
  if ((${#FAILED[@]})); then
    printf 'failed: %s\n' "${FAILED[*]}" >&2
    printf '%s: %d passed, %d failed\n' "${CI_NAME:-ci}" "${#PASSED[@]}" "${#FAILED[@]}"
    exit 1
  fi
  printf '%s: %d passed, 0 failed\n' "${CI_NAME:-ci}" "${#PASSED[@]}"
}
