#!/usr/bin/env bash
# destroy.sh: delete the scorer's infrastructure, its buckets' contents included.
#
# Asks before deleting anything unless --yes (and refuses without a terminal to
# ask on). Empties the input and output buckets (all object versions), then
# runs terraform destroy. Every name comes from `terraform output -json`.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./destroy.sh [--yes] [--dry-run]

Delete everything ./setup.sh created: empties the input and output buckets
(every object version: inputs, predictions, manifests), then terraform destroy.
The APIs stay enabled; the project itself is not deleted.

Options:
  -y, --yes    do not ask for confirmation (needed without a terminal)
  --dry-run    print the commands that would delete something instead of
               running them (read-only lookups still run)
  -h, --help   show this help

Needs: gcloud, terraform, jq, and the Terraform state written by ./setup.sh.
EOF
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TF_DIR="${SCORER_TF_DIR:-$ROOT/terraform}"
DRY_RUN=0
YES=0

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'destroy.sh: error: %s\n' "$*" >&2
  exit 1
}

# run CMD...: a command that deletes something. --dry-run prints it instead.
run() {
  if ((DRY_RUN)); then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    return 0
  fi
  "$@"
}

need_tools() {
  local missing=() tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    die "missing tool(s): ${missing[*]}. Install them first (gcloud: https://cloud.google.com/sdk/docs/install; terraform >= 1.5: https://developer.hashicorp.com/terraform/install; jq from your package manager)."
  fi
}

TF_OUT='{}'
read_outputs() {
  TF_OUT="$(terraform -chdir="$TF_DIR" output -json)" ||
    die "'terraform output' failed in $TF_DIR: run 'terraform -chdir=$TF_DIR init' (and configure the remote backend, see README.md, "Remote state")"
  [[ -n "$TF_OUT" ]] || TF_OUT='{}'
}
out() { jq -r --arg k "$1" '.[$k].value // empty' <<<"$TF_OUT"; }

while (($#)); do
  case "$1" in
    -y | --yes) YES=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; printf 'destroy.sh: unknown option: %s\n' "$1" >&2; exit 2 ;;
  esac
done

# --- preflight -------------------------------------------------------------------

need_tools gcloud terraform jq
[[ -d "$TF_DIR" ]] || die "no Terraform configuration at $TF_DIR"

read_outputs
PROJECT="$(out project_id)"
[[ -n "$PROJECT" ]] || die "no Google Cloud project: terraform output has no project_id (nothing deployed from $TF_DIR, or its state is elsewhere: see README.md, "Remote state")"
REGION="$(out region)"
BUCKETS=()
for name in input_bucket output_bucket; do
  b="$(out "$name")"
  if [[ -n "$b" ]]; then BUCKETS+=("$b"); fi
done

# --- confirmation ------------------------------------------------------------------

if ((!YES && !DRY_RUN)); then
  [[ -t 0 ]] || die "refusing to delete without --yes: there is no terminal to ask on. Nothing was deleted."
  printf 'This deletes the scorer in project %s, and every object in:\n' "$PROJECT" >&2
  if ((${#BUCKETS[@]})); then printf '  gs://%s\n' "${BUCKETS[@]}" >&2; fi
  printf 'Type the project ID to confirm: ' >&2
  read -r answer || answer=""
  [[ "$answer" == "$PROJECT" ]] || die "not confirmed. Nothing was deleted."
fi

# --- empty the buckets (terraform destroy refuses non-empty ones) -------------------

for b in ${BUCKETS[@]+"${BUCKETS[@]}"}; do
  if ! listing="$(gcloud storage ls --all-versions "gs://$b" --project "$PROJECT" 2>/dev/null)"; then
    say "gs://$b is not there (or not readable): skipping"
    continue
  fi
  if [[ -z "$listing" ]]; then
    say "gs://$b is empty"
    continue
  fi
  say "emptying gs://$b (all versions)"
  run gcloud storage rm --recursive --all-versions --project "$PROJECT" "gs://$b/**"
done

# --- and the rest ------------------------------------------------------------------

say "terraform destroy"
TF_VARS=(-var "project_id=$PROJECT")
if [[ -n "$REGION" ]]; then TF_VARS+=(-var "region=$REGION"); fi
# image_tag is only read when the service is created; any value does here.
TF_VARS+=(-var "image_tag=${SCORER_IMAGE_TAG:-destroy}")
run terraform -chdir="$TF_DIR" destroy -input=false -auto-approve "${TF_VARS[@]}"

if ((DRY_RUN)); then
  say "dry run: nothing was deleted"
else
  rm -f "$TF_DIR/image.auto.tfvars.json"
  say "done: the scorer is gone from $PROJECT (the APIs stay enabled)"
fi
