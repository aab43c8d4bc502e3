# shellcheck shell=bash
# scripts/common.sh: what setup.sh, deploy.sh and destroy.sh share. Each of
# them sets ROOT (the repository, found from its own path, so they run from
# any directory) and sources this file before its options are read:
#
#   ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
#   source "$ROOT/scripts/common.sh"
#
# It defines TF_DIR, DRY_RUN and ALLOW_DIRTY (the scripts' options set the
# last two), the messages (say, warn, die), run, need_tools, the reading of
# `terraform output` (read_outputs, out) and the image's tag and build
# (image_tag, image_exists, cloud_build_command, docker_build). Nothing here
# runs a command. The image functions read PROJECT, which the scripts set,
# and call the script's own need_out.

# The script being run (setup.sh, deploy.sh, destroy.sh): it names its errors.
SCRIPT_NAME="${BASH_SOURCE[1]##*/}"
TF_DIR="${SCORER_TF_DIR:-$ROOT/terraform}"
DRY_RUN=0
ALLOW_DIRTY=0

say() { printf '==> %s\n' "$*" >&2; }
warn() { printf '==> warning: %s\n' "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 1
}

# bad_option ARG: the usage, and exit 2.
bad_option() {
  usage >&2
  printf '%s: unknown option: %s\n' "$SCRIPT_NAME" "$1" >&2
  exit 2
}

# run CMD...: a command that changes (or deletes) something. --dry-run prints
# it instead.
run() {
  if ((DRY_RUN)); then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    return 0
  fi
  "$@"
}

# need_tools TOOL...: dies naming every TOOL that is not installed.
need_tools() {
  local missing=() tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    die "missing tool(s): ${missing[*]}. Install them first (gcloud: https://cloud.google.com/sdk/docs/install; terraform >= 1.5: https://developer.hashicorp.com/terraform/install; jq, git and docker from your package manager)."
  fi
}

# Outputs of the Terraform state as JSON ({} when there are none).
TF_OUT='{}'
# read_outputs: TF_OUT from `terraform output -json`; dies when terraform
# cannot read the state.
read_outputs() {
  TF_OUT="$(terraform -chdir="$TF_DIR" output -json)" ||
    die "'terraform output' failed in $TF_DIR: run 'terraform -chdir=$TF_DIR init' (and configure the remote backend, see README.md, Remote state)"
  [[ -n "$TF_OUT" ]] || TF_OUT='{}'
}
# out NAME: the output NAME (empty when there is none).
out() { jq -r --arg k "$1" '.[$k].value // empty' <<<"$TF_OUT"; }

# image_tag: the tag of the image of this work tree, its git commit
# (<commit>-dirty-<UTC time> for uncommitted changes, with --allow-dirty).
image_tag() {
  local sha
  sha="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null)" || die "$ROOT is not a git work tree with a commit: images are tagged with the git commit"
  if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]]; then
    ((ALLOW_DIRTY)) || die "the work tree has uncommitted changes; commit them (images are tagged with the commit) or pass --allow-dirty"
    printf '%s-dirty-%s' "$sha" "$(date -u +%Y%m%dT%H%M%SZ)"
    return 0
  fi
  printf '%s' "$sha"
}

# image_exists IMAGE: whether Artifact Registry has IMAGE already.
image_exists() {
  gcloud artifacts docker images describe "$1" --project "$PROJECT" --format='value(image_summary.digest)' >/dev/null 2>&1
}

# cloud_build_command IMAGE COMMIT REGION: BUILD_CMD, the command that builds
# IMAGE from the work tree (git commit COMMIT) with Cloud Build in REGION, as
# the build service account, the sources staged in the build bucket.
cloud_build_command() {
  local account bucket
  account="$(need_out build_service_account)"
  bucket="$(need_out build_bucket)"
  # shellcheck disable=SC2034 # run by the script that sources this file
  BUILD_CMD=(gcloud builds submit "$ROOT"
    --project "$PROJECT"
    --region "$3"
    --config "$ROOT/cloudbuild.yaml"
    --substitutions "_IMAGE=$1,_GIT_COMMIT=$2"
    --service-account "projects/$PROJECT/serviceAccounts/$account"
    --gcs-source-staging-dir "gs://$bucket/source")
}

# docker_build IMAGE COMMIT: builds IMAGE from the work tree (git commit
# COMMIT) with the local Docker, and pushes it.
docker_build() {
  say "building $1 with the local Docker"
  run gcloud auth configure-docker "${1%%/*}" --quiet
  run docker build --file "$ROOT/app/Dockerfile" --tag "$1" \
    --label "org.opencontainers.image.revision=$2" "$ROOT"
  run docker push "$1"
}
