#!/usr/bin/env bash
# fuzz/run.sh: the cargo-fuzz targets, each for a bounded time. Not part of
# CI (.ci/run): a fuzzing session is run by hand, before a release or after a
# change to the parsers.
#
#   envelope   fuzz_targets/envelope.rs: arbitrary bytes as a Pub/Sub push
#              body (and as the object resource inside one) through
#              scorer_events::pubsub::parse; never a panic, and an accepted
#              event holds a valid bucket, object name and generation that
#              survive Notification::push_envelope -> parse unchanged
#   csv_rows   fuzz_targets/csv_rows.rs: arbitrary bytes (behind a header
#              picked by the first byte, with engine options picked by the
#              second) scored by scorer_engine::score::score with the shipped
#              data/model.json; never a panic nor an engine error, rows_in =
#              rows_scored + rows_rejected, each rejected row reported once and
#              in order, and plain input gives one output line per scored row
#
# Usage: fuzz/run.sh [TARGET...]     (default: every target)
#   FUZZ_SECONDS       seconds of fuzzing per target (default 300)
#   SCORER_CACHE_DIR   the cache (default ~/.cache/scorer-ci)
#
# Everything it writes goes to the cache, nothing into the work tree (except
# that cargo refreshes fuzz/Cargo.lock when the app's dependencies changed):
#   bin-cargo-fuzz/     cargo-fuzz $CARGO_FUZZ_VERSION (cargo install from
#                       crates.io under nice, reinstalled when the pin changes)
#   fuzz-target/        the build (CARGO_TARGET_DIR); the first one compiles
#                       polars and the rest instrumented (eager polars only,
#                       no service crates), later ones only what changed
#   fuzz-corpus/T/      the inputs libFuzzer found, merged down to a minimal
#                       set after each clean run and kept between runs (the
#                       seeds in fuzz/corpus/T/ are only read)
#   fuzz-artifacts/T/   crash-*, timeout-*, oom-*, leak-*: the reproducers
#   fuzz-logs/T.log     libFuzzer's output of the last run (T.merge.log: the merge)
#
# The build is `cargo fuzz build -O --codegen-units 16` with AddressSanitizer
# (cargo-fuzz's default sanitizer) on stable rustc through RUSTC_BOOTSTRAP=1:
# -O keeps the dependencies as they ship (no debug assertions in polars),
# fuzz/Cargo.toml turns debug assertions and overflow checks back on for the
# engine crate alone (the targets depend on scorer-engine and scorer-events
# only: no tokio, axum or Google crate to build); ASan checks the unsafe code polars runs on these bytes;
# 16 codegen units halve the cold build on two cores for slower fuzzing.
# Each target runs in one process (no -jobs: with it libFuzzer forks workers
# and moves their output to fuzz-N.log), under nice, with POLARS_MAX_THREADS=1.
#
# A crash fails the script (after every target has run) and names its
# reproducer; replay one input with `<binary> <file>`, minimise it with
# `<binary> -minimize_crash=1 -runs=20000 <file>` (the summary prints both).
set -euo pipefail

CI_NAME=fuzz
# shellcheck source=.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/lib.sh"
FUZZ_SECONDS="${FUZZ_SECONDS:-300}"

# Pinned (a change reinstalls). cargo-fuzz 0.13.2 builds with rustc 1.95.
CARGO_FUZZ_VERSION="0.13.2"
TARGETS_ALL=(envelope csv_rows)

FUZZ_ROOT="$CACHE/bin-cargo-fuzz"
FUZZ_BIN="$FUZZ_ROOT/bin/cargo-fuzz"
FUZZ_INSTALL_DIR="$CACHE/cargo-fuzz-install-target"
BUILD_DIR="$CACHE/fuzz-target"
CORPUS_DIR="$CACHE/fuzz-corpus"
ARTIFACT_DIR="$CACHE/fuzz-artifacts"
LOG_DIR="$CACHE/fuzz-logs"
BUILD_FLAGS=(-O --codegen-units 16)

cd "$ROOT"

[[ "$FUZZ_SECONDS" =~ ^[1-9][0-9]*$ ]] || fatal "FUZZ_SECONDS=$FUZZ_SECONDS is not a positive number of seconds"
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=("${TARGETS_ALL[@]}")
for t in "${TARGETS[@]}"; do
  [[ " ${TARGETS_ALL[*]} " == *" $t "* ]] || fatal "unknown target $t (targets: ${TARGETS_ALL[*]})"
done

# --- tools -----------------------------------------------------------------------

# fuzz_need: see .ci/cargo-tool.sh.
fuzz_need() {
  cargo_tool_need cargo-fuzz "$CARGO_FUZZ_VERSION" "$FUZZ_ROOT" "$FUZZ_INSTALL_DIR"
}

note "tools (cache: $CACHE)"
fuzz_need
HOST="$(rustc -vV | sed -n 's/^host: //p')"
[[ -n "$HOST" ]] || fatal "rustc -vV names no host triple"
[[ -e "$(rustc --print sysroot)/lib/rustlib/$HOST/lib/librustc-stable_rt.asan.a" ]] ||
  fatal "the AddressSanitizer runtime for $HOST is missing from the Rust toolchain: rustup component add rust-std"
printf '%s, %s\n' "$("$FUZZ_BIN" --version)" "$(rustc --version)"

# --- build -----------------------------------------------------------------------

export RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$BUILD_DIR"
note "build: cargo fuzz build ${BUILD_FLAGS[*]} (AddressSanitizer) into $BUILD_DIR"
started=$SECONDS
nice -n 10 "$FUZZ_BIN" fuzz build "${BUILD_FLAGS[@]}" ||
  fatal "cargo fuzz build failed (above)"
printf 'built in %d s\n' "$((SECONDS - started))"

# --- fuzz ------------------------------------------------------------------------

# ASan as cargo-fuzz sets it; one polars thread (the machine is shared).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"
export POLARS_MAX_THREADS=1

# libfuzzer_stat NAME LOG: the value of libFuzzer's final `stat::NAME:` line.
libfuzzer_stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }

FAILED=()
SUMMARY=()
for t in "${TARGETS[@]}"; do
  bin="$BUILD_DIR/$HOST/release/$t"
  [[ -x "$bin" ]] || fatal "$bin was not built"
  corpus="$CORPUS_DIR/$t" artifacts="$ARTIFACT_DIR/$t" log="$LOG_DIR/$t.log"
  mkdir -p "$corpus" "$artifacts" "$LOG_DIR"
  marker="$(mktemp)"
  note "$t: $FUZZ_SECONDS s, corpus $corpus + seeds fuzz/corpus/$t"
  rc=0
  started=$SECONDS
  # new inputs go to the first corpus directory (the cache); the seeds are read
  nice -n 10 "$bin" "$corpus" "fuzz/corpus/$t" \
    -max_total_time="$FUZZ_SECONDS" -timeout=60 -rss_limit_mb=4096 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || rc=$?
  elapsed=$((SECONDS - started))
  # the end of libFuzzer's output, less its recommended dictionary
  grep -v -e '^"' -e '^###### ' "$log" | tail -n 25
  mapfile -t found < <(find "$artifacts" -maxdepth 1 -type f -newer "$marker" \
    \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | sort)
  rm -f "$marker"
  line="$t: $(libfuzzer_stat number_of_executed_units "$log") runs in ${elapsed} s ($(libfuzzer_stat average_exec_per_sec "$log") exec/s),"
  live="$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' "$log" | tail -1)"
  line+=" corpus ${live:-?} inputs ($(libfuzzer_stat new_units_added "$log") new this run;"
  line+=" $(find "$corpus" -type f | wc -l) files in $corpus),"
  line+=" peak RSS $(libfuzzer_stat peak_rss_mb "$log") MB"
  if ((rc == 0 && ${#found[@]} == 0)); then
    # Keep the cache corpus small (libFuzzer keeps every input it replaced):
    # merge it into the inputs that cover what it covers. A failed merge
    # leaves it as it was.
    rm -rf "$corpus.merge"
    mkdir -p "$corpus.merge"
    if nice -n 10 "$bin" -merge=1 "$corpus.merge" "$corpus" -timeout=60 -rss_limit_mb=4096 \
      -artifact_prefix="$artifacts/" >"$LOG_DIR/$t.merge.log" 2>&1; then
      rm -rf "$corpus"
      mv "$corpus.merge" "$corpus"
    else
      rm -rf "$corpus.merge"
    fi
    line+=", corpus merged to $(find "$corpus" -type f | wc -l) files"
    SUMMARY+=("$line, crashes: 0")
  else
    FAILED+=("$t")
    SUMMARY+=("$line, FAILED (exit $rc), log $log")
    for f in "${found[@]}"; do
      SUMMARY+=("  reproducer: $f" "    replay:   $bin $f"
        "    minimise: $bin -minimize_crash=1 -runs=20000 -artifact_prefix=$artifacts/ $f")
    done
    ((${#found[@]})) || SUMMARY+=("  no reproducer was written: see $log")
  fi
done

note "summary"
printf '%s\n' "${SUMMARY[@]}"
if ((${#FAILED[@]})); then
  printf 'fuzz: %d passed, %d failed (%s)\n' "$((${#TARGETS[@]} - ${#FAILED[@]}))" "${#FAILED[@]}" "${FAILED[*]}"
  exit 1
fi
printf 'fuzz: %d passed, 0 failed\n' "${#TARGETS[@]}"
