#!/usr/bin/env bash
# The README's test command: every test of the project, on a fresh machine.
#
#   ./test.sh                # all tests
#   ./test.sh service::      # extra arguments go to `cargo test`
#
# It installs what the tests need that a fresh machine lacks (the Cloud Storage
# emulator from the Python package index, into a cache directory reused on the
# next run), checks that Google's own tools are present (gcloud's Pub/Sub
# emulator, gsutil) and fails naming what to install when one is not, then runs
# `cargo test --release` (the release profile is the one `cargo run --release
# -- demo` builds, so the two README commands share one build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export SCORER_CACHE_DIR="${SCORER_CACHE_DIR:-$HOME/.cache/scorer-ci}"

# shellcheck source=.ci/tools.sh
source .ci/tools.sh
scorer_test_tools

exec cargo test --release --locked "$@"
