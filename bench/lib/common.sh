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
