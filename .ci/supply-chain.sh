#!/usr/bin/env bash
# .ci/supply-chain.sh: supply chain and secrets checks (issue 11, point 8).
#
#   cargo deny    `cargo deny check licenses bans sources` against deny.toml:
#                 every crate's license allowed, no `*` version requirement,
#                 duplicate versions reported (warnings), crates.io the only
#                 source (no git, no other registry). Offline. The advisories
#                 need the RustSec database on GitHub: the workflow's
#                 `advisories` job checks them, with the same deny.toml.
#   secrets       detect-secrets over every file git tracks (git ls-files),
#                 against .secrets.baseline; any finding not in the baseline
#                 fails. No network (--no-verify).
#
# The tools are installed into "${SCORER_CACHE_DIR:-$HOME/.cache/scorer-ci}":
# cargo-deny from crates.io (cargo install, built under nice) into
# bin-cargo-deny/, detect-secrets from PyPI into the virtualenv secrets-venv/.
# They are reused while the pinned versions below hold and rebuilt when those
# change. A tool that cannot be had fails the run and says what to install:
# nothing is skipped. Both checks run; the script fails at the end if either
# failed.
#
# After a reviewed change that the secrets scan flags wrongly (a test vector, a
# digest), refresh the baseline and mark the new entry as no secret:
#   "$SCORER_CACHE_DIR/secrets-venv/bin/detect-secrets" scan --no-verify \
#     --baseline .secrets.baseline
#   "$SCORER_CACHE_DIR/secrets-venv/bin/detect-secrets" audit .secrets.baseline
# and write down why in the list of allowed findings below.
set -euo pipefail

CI_NAME=supply-chain
# shellcheck source=.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Pinned tools (a change reinstalls the matching one). cargo-deny 0.20.2 needs
# rustc >= 1.88; deny.toml sticks to fields that 0.19 (the GitHub action) knows.
CARGO_DENY_VERSION="0.20.2"
SCANNER_SPEC="detect-secrets==1.5.0"

DENY_ROOT="$CACHE/bin-cargo-deny"
DENY_BIN="$DENY_ROOT/bin/cargo-deny"
DENY_BUILD_DIR="$CACHE/cargo-install-target"
SECRETS_VENV="$CACHE/secrets-venv"
BASELINE=".secrets.baseline"

# The findings .secrets.baseline allows, each reviewed (is_secret: false there):
#   app/src/auth.rs            "JSON Web Token": an unsigned alg=none token with
#                              the claims {"aud":"aud"}, which the auth test must
#                              refuse; it carries no signature and no key
#   tests/infra/test_terraform.py  "Private Key": the test asserts that the
#                              Terraform holds no PEM private key header; the
#                              header text alone, no key
#   fuzz/corpus/envelope/google-finalize.json, emulator-finalize.json
#                              "Base64 High Entropy String": message.data of
#                              the fuzz seed push envelopes, the base64 of a
#                              public Cloud Storage object resource; no secret
#   app/tests/it/keys/{good,rogue,rotated}.pem and .jwk.json
#                              "Private Key" / "Base64 High Entropy String":
#                              throwaway RSA test keys (openssl genrsa 2048)
#                              that sign the forged and valid push tokens of
#                              app/tests/it/auth.rs; they sign nothing else and
#                              no deployment trusts them
#   app/src/server/push.rs, docs/openapi.json (the OpenAPI example of a push
#                              envelope), events/src/cloudevent/tests.rs (Google's
#                              sample object resource: customerEncryption's
#                              keySha256 is the public digest of a sample key)
#   cloud/tests/it/bigquery.rs "Base64 High Entropy String": the URL path of a
#                              BigQuery load job id built from a test bucket,
#                              object name and generation; no secret
#                              "Base64 High Entropy String": example message
#                              bodies and digests from Google's documentation
#                              samples; no secret
# and the baseline's one line filter (--exclude-lines):
#   ^\s*"data_sha256": "[0-9a-f]{64}",?$   the SHA-256 of the training CSV that
#                              the trainer writes into model artifacts
#                              (data/model.json): a public digest, no secret

cd "$ROOT"

# --- tools -----------------------------------------------------------------------

# deny_need: see .ci/cargo-tool.sh.
deny_need() {
  cargo_tool_need cargo-deny "$CARGO_DENY_VERSION" "$DENY_ROOT" "$DENY_BUILD_DIR" "needs rustc >= 1.88 and a C compiler"
}

# secrets_need: detect-secrets in its own virtualenv (see venv_need).
secrets_need() {
  venv_need "$SECRETS_VENV" "$SCANNER_SPEC" detect-secrets
}

note "tools (cache: $CACHE)"
command -v git >/dev/null 2>&1 || fatal "git is missing (the secrets scan reads git ls-files): apt-get install git"
git rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
  fatal "$ROOT is not a git work tree: the secrets scan covers the files git tracks"
[[ -f deny.toml ]] || fatal "deny.toml is missing at $ROOT"
[[ -f "$BASELINE" ]] || fatal "$BASELINE is missing at $ROOT"
deny_need
secrets_need
printf '%s, detect-secrets %s, %s\n' "$("$DENY_BIN" --version)" \
  "$("$SECRETS_VENV/bin/detect-secrets" --version)" "$(cargo --version)"

# --- checks ----------------------------------------------------------------------


run_cargo_deny() {
  # --locked: Cargo.lock as committed; --all-features as the GitHub action runs
  # it; the inclusion graphs (thousands of lines for the duplicates) are left
  # out: run without --hide-inclusion-graph to see who pulls a crate in
  "$DENY_BIN" --color never --manifest-path Cargo.toml --config deny.toml \
    --all-features --locked \
    check --hide-inclusion-graph --show-stats licenses bans sources
}

# The baseline may only hold findings reviewed as no secret, with every
# detector on and no network verification.
check_baseline() {
  "$SECRETS_VENV/bin/python" - "$BASELINE" <<'EOF'
import json
import sys

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

path = sys.argv[1]
baseline = json.load(open(path))
problems = []
used = {p["name"] for p in baseline.get("plugins_used", [])}
every = {cls.__name__ for cls in get_mapping_from_secret_type_to_class().values()}
for name in sorted(every - used):
    problems.append(f"detector {name} is off")
for f in baseline.get("filters_used", []):
    if f["path"].endswith("is_ignored_due_to_verification_policies"):
        problems.append("network verification is on (scan with --no-verify)")
results = [r for rs in baseline.get("results", {}).values() for r in rs]
for r in results:
    if r.get("is_secret") is not False:
        problems.append(f"{r['filename']}:{r['line_number']} ({r['type']}) is not reviewed as no secret "
                        "(detect-secrets audit, then give the reason in .ci/supply-chain.sh)")
if problems:
    print(f"{path}:", *problems, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"{path}: {len(results)} reviewed finding(s), {len(used)} detectors")
EOF
}

run_secrets_scan() {
  check_baseline || return 1
  local tmp rc=0 files=() f
  while IFS= read -r -d '' f; do
    # the baseline holds the SHA-1 hashes of the allowed findings (which look
    # like hex secrets), nothing else; a tracked file deleted or replaced in
    # this work tree has nothing to scan
    [[ "$f" != "$BASELINE" && -f "$f" && ! -L "$f" ]] && files+=("$f")
  done < <(git ls-files -z)
  ((${#files[@]})) || {
    printf 'git ls-files lists no file\n' >&2
    return 1
  }
  # the hook rewrites the baseline it is given when line numbers moved: it gets a copy
  tmp="$(mktemp -d)"
  cp "$BASELINE" "$tmp/baseline"
  "$SECRETS_VENV/bin/detect-secrets-hook" --no-verify --baseline "$tmp/baseline" "${files[@]}" || rc=$?
  rm -rf "$tmp"
  case "$rc" in
  0) printf '%d tracked files, no secret outside %s\n' "${#files[@]}" "$BASELINE" ;;
  3) printf '%d tracked files, no secret outside %s (its line numbers are out of date: refresh it with the scan command at the top of this script)\n' \
    "${#files[@]}" "$BASELINE" ;;
  *)
    printf 'detect-secrets found the above in tracked files: remove the secret (and rotate it if it was ever pushed), or, for a reviewed false positive, add it to %s (see the top of .ci/supply-chain.sh)\n' \
      "$BASELINE" >&2
    return 1
    ;;
  esac
}

check "cargo deny check licenses bans sources" run_cargo_deny
check "secrets (detect-secrets, tracked files)" run_secrets_scan

summarize_checks
