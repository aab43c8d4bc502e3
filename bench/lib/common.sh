# shellcheck shell=bash
# Helpers shared by bench/*.sh (sourced, not run).

bench_die() { echo "error: $*" >&2; exit 1; }
bench_log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# Installs a Debian package when its command is missing (we run as root here);
# elsewhere says what to install.
bench_need_cmd() { # CMD [DEBIAN_PACKAGE]
  local cmd="$1" pkg="${2:-$1}"
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    bench_log "installing $pkg (apt-get)"
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$pkg"; } >&2 \
      || bench_die "apt-get install $pkg failed"
    command -v "$cmd" >/dev/null 2>&1 && return 0
  fi
  bench_die "$cmd not found: install it (Debian: apt-get install -y --no-install-recommends $pkg)"
}

# Load tests only ever target this machine (loopback).
bench_require_loopback() { # URL
  local url="$1" host
  host="${url#*://}"
  host="${host%%/*}"
  case "$host" in
    \[::1\]|\[::1\]:*) return 0 ;;
  esac
  host="${host%%:*}"
  case "$host" in
    localhost|127.*) return 0 ;;
  esac
  bench_die "refusing to load-test $url: only loopback targets (127.0.0.0/8, localhost, [::1])"
}

# bench_find_scorer: sets $scorer to an absolute path of the scorer binary:
# $SCORER_BIN, else $CARGO_TARGET_DIR/release/scorer, target/release/scorer,
# $CACHE/target/release/scorer (the first that is an executable file).
bench_find_scorer() {
  local candidates=() c
  if [[ -n "${SCORER_BIN:-}" ]]; then
    candidates=("$SCORER_BIN")
  else
    if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then candidates+=("$CARGO_TARGET_DIR/release/scorer"); fi
    candidates+=("target/release/scorer" "${CACHE:-$HOME/.cache/scorer-ci}/target/release/scorer")
  fi
  scorer=""
  for c in "${candidates[@]}"; do
    if [[ -f "$c" && -x "$c" ]]; then scorer="$c" && break; fi
  done
  [[ -n "$scorer" ]] || bench_die "scorer binary not found (looked at: ${candidates[*]}).
  Build it first:  cargo build --release
  (or point SCORER_BIN at a release build of the scorer)"
  scorer="$(cd "$(dirname "$scorer")" && pwd)/$(basename "$scorer")"
}

# bench_timed DIR NAME COMMAND...: runs COMMAND (its output discarded) under
# GNU time, appending "NAME wall_s peak_kib" to DIR/times for
# bench/lib/medians.py; a failing COMMAND stops the script with its stderr.
bench_timed() {
  local dir="$1" name="$2"
  shift 2
  /usr/bin/time -f "$name %e %M" -a -o "$dir/times" "$@" >/dev/null 2>"$dir/$name.err" || {
    cat "$dir/$name.err" >&2
    exit 1
  }
}
