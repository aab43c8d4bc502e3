#!/usr/bin/env bash
# deploy.sh: roll the scorer service to a new image, or back to the previous one.
#
# Builds and pushes the image of the current git commit (Cloud Build by default;
# an image that already exists for the commit is reused), creates a Cloud Run
# revision with it, sends all traffic to it and prints the new revision.
# --rollback sends all traffic back to the previous ready revision instead.
# Every name comes from `terraform output -json`.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./deploy.sh [--builder cloudbuild|docker] [--allow-dirty] [--dry-run]
       ./deploy.sh --rollback [--to REVISION] [--dry-run]

Deploy: build and push <image_uri>:<git commit> (unless it exists), roll the
Cloud Run service to it with all traffic, and print the new revision.
Rollback: send all traffic to the ready revision created before the one that
serves now (or to --to REVISION).

Options:
  --builder KIND   cloudbuild (default: gcloud builds submit, no local Docker)
                   or docker (docker build + push on this machine, as CI does)
  --allow-dirty    deploy a work tree with uncommitted changes
                   (tag <commit>-dirty-<UTC time>)
  --rollback       move traffic back instead of deploying
  --to REVISION    with --rollback: the revision to send all traffic to
  --dry-run        print the commands that would change something instead of
                   running them (read-only lookups still run)
  -h, --help       show this help

Needs: gcloud, terraform, jq, git (docker with --builder docker), and the
Terraform state written by ./setup.sh (local, or the remote backend).
EOF
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TF_DIR="${SCORER_TF_DIR:-$ROOT/terraform}"
DRY_RUN=0
BUILDER="cloudbuild"
ALLOW_DIRTY=0
ROLLBACK=0
TO_REVISION=""

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'deploy.sh: error: %s\n' "$*" >&2
  exit 1
}

# run CMD...: a command that changes something. --dry-run prints it instead.
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
    die "missing tool(s): ${missing[*]}. Install them first (gcloud: https://cloud.google.com/sdk/docs/install; terraform >= 1.5: https://developer.hashicorp.com/terraform/install; jq, git and docker from your package manager)."
  fi
}

TF_OUT='{}'
read_outputs() {
  TF_OUT="$(terraform -chdir="$TF_DIR" output -json)" ||
    die "'terraform output' failed in $TF_DIR: run 'terraform -chdir=$TF_DIR init' (and configure the remote backend, see README.md, "Remote state")"
  [[ -n "$TF_OUT" ]] || TF_OUT='{}'
}
out() { jq -r --arg k "$1" '.[$k].value // empty' <<<"$TF_OUT"; }
need_out() {
  local v
  v="$(out "$1")"
  [[ -n "$v" ]] || die "terraform output has no '$1': run ./setup.sh first"
  printf '%s' "$v"
}

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

while (($#)); do
  case "$1" in
    --builder) BUILDER="${2:?--builder needs a value}"; shift 2 ;;
    --builder=*) BUILDER="${1#*=}"; shift ;;
    --allow-dirty) ALLOW_DIRTY=1; shift ;;
    --rollback) ROLLBACK=1; shift ;;
    --to) TO_REVISION="${2:?--to needs a revision}"; shift 2 ;;
    --to=*) TO_REVISION="${1#*=}"; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; printf 'deploy.sh: unknown option: %s\n' "$1" >&2; exit 2 ;;
  esac
done
[[ -z "$TO_REVISION" || "$ROLLBACK" == 1 ]] || die "--to only goes with --rollback"

# --- preflight -------------------------------------------------------------------

TOOLS=(gcloud terraform jq)
if ((!ROLLBACK)); then
  TOOLS+=(git)
  case "$BUILDER" in
    cloudbuild) ;;
    docker) TOOLS+=(docker) ;;
    *) die "--builder must be cloudbuild or docker, not '$BUILDER'" ;;
  esac
fi
need_tools "${TOOLS[@]}"
[[ -d "$TF_DIR" ]] || die "no Terraform configuration at $TF_DIR"

read_outputs
PROJECT="$(out project_id)"
[[ -n "$PROJECT" ]] || die "no Google Cloud project: terraform output has no project_id (no state in $TF_DIR?). Run ./setup.sh first, or configure the remote backend (README.md, "Remote state")"
REGION="$(need_out region)"
SERVICE="$(need_out service_name)"
GC=(--project "$PROJECT" --region "$REGION")

# --- rollback ----------------------------------------------------------------------

if ((ROLLBACK)); then
  SERVICE_JSON="$(gcloud run services describe "$SERVICE" "${GC[@]}" --format=json)" ||
    die "cannot describe service $SERVICE"
  # the revision that serves now: the largest traffic share
  CURRENT="$(jq -r '[.status.traffic[]? | select((.percent // 0) > 0)] | max_by(.percent) | .revisionName // empty' <<<"$SERVICE_JSON")"
  REVISIONS_JSON="$(gcloud run revisions list --service "$SERVICE" "${GC[@]}" --format=json)" ||
    die "cannot list the revisions of $SERVICE"
  # ready revisions, newest first
  READY="$(jq -r '
      map(select(any(.status.conditions[]?; .type == "Ready" and .status == "True")))
      | sort_by(.metadata.creationTimestamp) | reverse | .[].metadata.name' <<<"$REVISIONS_JSON")"

  if [[ -n "$TO_REVISION" ]]; then
    grep -qxF -- "$TO_REVISION" <<<"$READY" || die "revision $TO_REVISION is not a ready revision of $SERVICE"
    TARGET="$TO_REVISION"
  else
    [[ -n "$CURRENT" ]] || die "cannot tell which revision of $SERVICE serves now"
    # the first ready revision older than the current one
    TARGET="$(jq -r --arg cur "$CURRENT" '
        (map(select(.metadata.name == $cur)) | .[0].metadata.creationTimestamp) as $t
        | map(select(any(.status.conditions[]?; .type == "Ready" and .status == "True")))
        | map(select($t != null and .metadata.creationTimestamp < $t))
        | sort_by(.metadata.creationTimestamp) | reverse | .[0].metadata.name // empty' <<<"$REVISIONS_JSON")"
    [[ -n "$TARGET" ]] || die "no ready revision of $SERVICE older than $CURRENT: nothing to roll back to"
  fi
  [[ "$TARGET" != "$CURRENT" ]] || die "$TARGET already serves all traffic"

  say "rolling $SERVICE back: ${CURRENT:-?} -> $TARGET (all traffic)"
  run gcloud run services update-traffic "$SERVICE" "${GC[@]}" --to-revisions "$TARGET=100"
  if ((DRY_RUN)); then
    say "dry run: nothing was changed"
  else
    say "all traffic now goes to $TARGET; the next ./deploy.sh sends it to the new revision again"
  fi
  printf '%s\n' "$TARGET"
  exit 0
fi

# --- deploy ---------------------------------------------------------------------------

IMAGE_URI="$(need_out image_uri)"
TAG="$(image_tag)"
COMMIT="${TAG%%-dirty-*}"
IMAGE="$IMAGE_URI:$TAG"

if gcloud artifacts docker images describe "$IMAGE" --project "$PROJECT" --format='value(image_summary.digest)' >/dev/null 2>&1; then
  say "image $IMAGE exists: not rebuilding"
elif [[ "$BUILDER" == cloudbuild ]]; then
  say "building $IMAGE with Cloud Build"
  BUILD_SA="$(need_out build_service_account)"
  BUILD_BUCKET="$(need_out build_bucket)"
  run gcloud builds submit "$ROOT" \
    --project "$PROJECT" \
    --region "$REGION" \
    --config "$ROOT/cloudbuild.yaml" \
    --substitutions "_IMAGE=$IMAGE,_GIT_COMMIT=$COMMIT" \
    --service-account "projects/$PROJECT/serviceAccounts/$BUILD_SA" \
    --gcs-source-staging-dir "gs://$BUILD_BUCKET/source"
else
  say "building $IMAGE with the local Docker"
  run gcloud auth configure-docker "${IMAGE_URI%%/*}" --quiet
  run docker build --file "$ROOT/app/Dockerfile" --tag "$IMAGE" \
    --label "org.opencontainers.image.revision=$COMMIT" "$ROOT"
  run docker push "$IMAGE"
fi

say "rolling $SERVICE to $IMAGE"
# A new revision (waits until it is ready; a revision that fails its startup
# probe on /ready leaves traffic where it was) ...
run gcloud run services update "$SERVICE" "${GC[@]}" --image "$IMAGE" --quiet
# ... and all traffic to it, also after an earlier --rollback pinned traffic.
run gcloud run services update-traffic "$SERVICE" "${GC[@]}" --to-latest --quiet

if ((DRY_RUN)); then
  say "dry run: nothing was changed"
  exit 0
fi
REVISION="$(gcloud run services describe "$SERVICE" "${GC[@]}" --format='value(status.latestReadyRevisionName)')"
say "$SERVICE now serves $REVISION ($IMAGE); undo with ./deploy.sh --rollback"
printf '%s\n' "$REVISION"
