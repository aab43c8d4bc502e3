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
# `terraform output` (read_outputs, out) and of the state (tainted_services),
# the image's tag and build (image_tag, image_exists, cloud_build_command,
# explain_build_failure, docker_build) and the bounded retry of what a fresh
# project is slow to see (lag_reason, retry_lagging). Nothing here runs a
# command. The image functions read PROJECT, which the scripts set, and call
# the script's own need_out.

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
    die "'terraform output' failed in $TF_DIR: run 'terraform -chdir=$TF_DIR init' (and configure the remote backend, see docs/OPERATIONS.md, \"Remote state\")"
  [[ -n "$TF_OUT" ]] || TF_OUT='{}'
}
# out NAME: the output NAME (empty when there is none).
out() { jq -r --arg k "$1" '.[$k].value // empty' <<<"$TF_OUT"; }

# tainted_services: the Cloud Run services that the Terraform state holds
# tainted (created by an apply that then failed on them: the next apply
# replaces them), one address a line; fails when terraform cannot show the
# state.
tainted_services() {
  local state
  state="$(terraform -chdir="$TF_DIR" show -json 2>/dev/null)" || return 1
  jq -r '.values.root_module.resources[]?
    | select(.type == "google_cloud_run_v2_service" and .tainted == true) | .address' <<<"$state"
}

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
# the build service account, the sources staged in the build bucket (and
# BUILD_REGION, for explain_build_failure).
cloud_build_command() {
  local account bucket
  account="$(need_out build_service_account)"
  bucket="$(need_out build_bucket)"
  BUILD_REGION="$3"
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

# explain_build_failure FILE: when FILE holds gcloud's "build ID completed with
# status ..." (a build that ran and failed), say why Cloud Build says it failed
# (`gcloud builds describe`: failureInfo.type and .detail) and how to read its
# log, and print the failure type (empty when there is none to be had).
explain_build_failure() {
  local id info type detail
  id="$(grep -oE 'build [0-9a-f-]{36} completed with status' "$1" | tail -n 1 | cut -d' ' -f2)"
  [[ -n "$id" ]] || return 0
  info="$(gcloud builds describe "$id" --project "$PROJECT" --region "$BUILD_REGION" \
    --format='value(failureInfo.type,failureInfo.detail)' 2>/dev/null)" || info=""
  type="${info%%$'\t'*}"
  detail=""
  [[ "$info" != *$'\t'* ]] || detail="${info#*$'\t'}"
  if [[ -n "$type" ]]; then
    say "Cloud Build says build $id failed with $type${detail:+: $detail}"
  else
    say "Cloud Build gives no failure type for build $id: its log says why"
  fi
  say "its log: gcloud logging read 'resource.type=\"build\" AND resource.labels.build_id=\"$id\"' --project $PROJECT --order asc --format 'value(textPayload)'"
  printf '%s' "$type"
}

# --- waiting for what a fresh project is known to be slow to see ------------------

# Seconds between retries; the length of each list bounds the retries.
LAG_DELAYS=(15 30 60 60 60)        # APIs, service accounts, IAM grants: ~4 min
METRIC_DELAYS=(60 120 120 120 180) # new log-based metrics: ~10 min

# lag_reason KIND FILE: what the error in FILE says we must wait for (empty:
# a real error, not worth a retry). KIND is apply or build. Google's wordings
# vary in case (iam.serviceaccounts.actAs, iam.serviceAccounts.actAs), so they
# are matched case-insensitively, and on the text unwrapped: terraform wraps a
# diagnostic's detail at 78 columns in its box (colours and "│" stripped,
# lines joined). tests/infra/test_scripts.py feeds this the errors seen on real
# projects (test_lag_reason).
lag_reason() {
  local kind="$1" file="$2" failure text
  if [[ "$kind" == build ]] && grep -q 'completed with status' "$file"; then
    # the build ran and failed: the code, unless Cloud Build says the
    # builder's new grants (source bucket, repository) had not reached it
    failure="$(explain_build_failure "$file")"
    case "$failure" in
      PUSH_NOT_AUTHORIZED | FETCH_SOURCE_FAILED)
        printf "the builder account's new grants to reach Cloud Build, Cloud Storage and Artifact Registry (a minute or three; Cloud Build said %s)" "$failure"
        ;;
    esac
    return 0
  fi
  text="$(sed -e $'s/\x1b\\[[0-9;]*m//g' -e 's/^[│ ]*//' "$file" | tr '\n' ' ')"
  if grep -qiE 'Cannot find metric\(s\)' <<<"$text"; then
    printf 'the new log-based metrics to reach Cloud Monitoring (up to 10 minutes after they are created)'
  elif grep -qiE 'SERVICE_DISABLED|has not been used in project|enabled this API recently|API( [^ ]*)? is disabled' <<<"$text"; then
    printf 'the APIs enabled moments ago to become usable (a minute or three on a new project)'
  elif grep -qiE "Cloud Pub/Sub topic [^ ]* not found, or user [^ ]* does not have permission|does not have permission to publish messages to( to)? the Cloud Pub/Sub topic" <<<"$text"; then
    printf "the Cloud Storage service agent's new grant on the topic to reach Pub/Sub (a minute or three)"
  elif grep -qiE 'Permission denied while using the Eventarc Service Agent|service account for your bucket is unable to publish to Cloud Pub/Sub' <<<"$text"; then
    printf "the Eventarc and Cloud Storage service agents' new permissions to propagate (a minute or three)"
  elif grep -qiE 'does not have permission to get access tokens' <<<"$text"; then
    printf "the Cloud Run service agent's access to the new service accounts (a minute or three on a new project)"
  elif grep -qiE 'service account [^ ]* (does not exist|not found)|Gaia id not found|iam\.serviceAccounts\.actAs|permission to act as' <<<"$text"; then
    printf 'the service accounts created moments ago to be usable in IAM (a minute or three)'
  elif [[ "$kind" == build ]] && grep -qiE 'PERMISSION_DENIED|does not have [^ ]+ access|forbidden|Error 403' <<<"$text"; then
    printf "the builder account's new grants to reach Cloud Build and Cloud Storage (a minute or three)"
  fi
}

# retry_lagging KIND CMD...: run CMD (through run: --dry-run prints it). When
# it fails with an error that a fresh project is known to give for a while
# (lag_reason), say what it waits for, wait, and run it again: at most
# ${#LAG_DELAYS[@]} retries (${#METRIC_DELAYS[@]} for the metrics). Any other
# failure is returned at once.
retry_lagging() {
  local kind="$1" err rc attempt=0 reason delay
  shift
  err="$(mktemp "${TMPDIR:-/tmp}/scorer-$SCRIPT_NAME.XXXXXX")"
  while :; do
    rc=0
    run "$@" 2>"$err" || rc=$?
    cat "$err" >&2
    if ((rc == 0)); then
      rm -f "$err"
      return 0
    fi
    reason="$(lag_reason "$kind" "$err")"
    if [[ -z "$reason" ]]; then
      rm -f "$err"
      return "$rc"
    fi
    local -a delays=("${LAG_DELAYS[@]}")
    [[ "$reason" != *metrics* ]] || delays=("${METRIC_DELAYS[@]}")
    if ((attempt >= ${#delays[@]})); then
      say "gave up waiting for $reason after $attempt retries"
      rm -f "$err"
      return "$rc"
    fi
    delay="${delays[$attempt]}"
    attempt=$((attempt + 1))
    say "waiting for $reason: retry $attempt of ${#delays[@]} in ${delay}s"
    sleep "$delay"
  done
}
