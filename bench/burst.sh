#!/usr/bin/env bash
# A burst of 300 files on two instances, as the push service was configured
# before (request concurrency 16, 2 job slots) and as it is now (concurrency
# = job slots = 2), side by side: the 429s, pushes, dead letters and time of
# each (app/tests/it/burst.rs says what stands in for Cloud Run and Pub/Sub).
# About two minutes.
#
#   bench/burst.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec ./test.sh --test it -- burst::burst_before_and_after --ignored --nocapture
