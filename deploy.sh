#!/usr/bin/env bash
# deploy.sh: roll the scorer's two Cloud Run services (push and predict, one
# image) and its shard job (the same image) to a new image, or the services
# back to their previous revisions.
#
# Builds and pushes the image of the current git commit (Cloud Build by default;
# an image that already exists for the commit is reused), points the shard job
# at it, creates a revision of each service with it, sends all traffic to it
# and prints the new revisions. --rollback sends each service's traffic back
# to its previous ready revision instead (and the shard job back to the image
# of the push service's). Every name comes from `terraform output -json`.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./deploy.sh [--builder cloudbuild|docker] [--allow-dirty] [--dry-run]
       ./deploy.sh --rollback [--service push|predict|both] [--to REVISION] [--dry-run]

Deploy: build and push <image_uri>:<git commit> (unless it exists), point the
shard job (large inputs) at it, roll both Cloud Run services (push: the
Pub/Sub pushes; predict: POST /predict) to it with all traffic, and print
"<service> <new revision>" for each.
Rollback: send each service's traffic to its ready revision created before the
one that serves now (or to --to REVISION, in the service that has it), and
print "<service> <revision>" for each; the shard job goes back to the image of
the push service's revision. Nothing changes unless every service asked for
has a revision to go back to.

Options:
  --builder KIND   cloudbuild (default: gcloud builds submit, no local Docker)
                   or docker (docker build + push on this machine, as CI does)
  --allow-dirty    deploy a work tree with uncommitted changes
                   (tag <commit>-dirty-<UTC time>)
  --rollback       move traffic back instead of deploying
  --service WHICH  with --rollback: push, predict or both (default)
  --to REVISION    with --rollback: the revision to send all traffic to (its
                   service alone is rolled back)
  --dry-run        print the commands that would change something instead of
                   running them (read-only lookups still run)
  -h, --help       show this help

Needs: gcloud, terraform, jq, git (docker with --builder docker), and the
Terraform state written by ./setup.sh (local, or the remote backend).
EOF
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# TF_DIR, DRY_RUN, say/warn/die, run, need_tools, read_outputs/out, the image build
# shellcheck source=scripts/common.sh
source "$ROOT/scripts/common.sh"
BUILDER="cloudbuild"
ROLLBACK=0
TO_REVISION=""
WHICH="both"

need_out() {
  local v
  v="$(out "$1")"
  [[ -n "$v" ]] || die "terraform output has no '$1': run ./setup.sh first"
  printf '%s' "$v"
}

while (($#)); do
  case "$1" in
    --builder) BUILDER="${2:?--builder needs a value}"; shift 2 ;;
    --builder=*) BUILDER="${1#*=}"; shift ;;
    --allow-dirty) ALLOW_DIRTY=1; shift ;;
    --rollback) ROLLBACK=1; shift ;;
    --to) TO_REVISION="${2:?--to needs a revision}"; shift 2 ;;
    --to=*) TO_REVISION="${1#*=}"; shift ;;
    --service) WHICH="${2:?--service needs push, predict or both}"; shift 2 ;;
    --service=*) WHICH="${1#*=}"; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) bad_option "$1" ;;
  esac
done
[[ -z "$TO_REVISION" || "$ROLLBACK" == 1 ]] || die "--to only goes with --rollback"
[[ "$WHICH" == both || "$ROLLBACK" == 1 ]] || die "--service only goes with --rollback (a deploy rolls both services)"
case "$WHICH" in push | predict | both) ;; *) die "--service must be push, predict or both, not '$WHICH'" ;; esac

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
[[ -n "$PROJECT" ]] || die "no Google Cloud project: terraform output has no project_id (no state in $TF_DIR?). Run ./setup.sh first, or configure the remote backend (docs/OPERATIONS.md, \"Remote state\")"
REGION="$(need_out region)"
PUSH_SERVICE="$(out push_service_name)"
PREDICT_SERVICE="$(out predict_service_name)"
[[ -n "$PUSH_SERVICE" && -n "$PREDICT_SERVICE" ]] ||
  die "terraform output has no push_service_name / predict_service_name: an apply stopped halfway (a service was never created), or the state predates the push/predict split. Run ./setup.sh: it builds this commit and creates what is missing"
TAINTED="$(tainted_services || true)"
[[ -z "$TAINTED" ]] ||
  die "$(tr '\n' ' ' <<<"$TAINTED")is tainted in the Terraform state (its create failed halfway). Run ./setup.sh: it builds this commit and replaces it"
GC=(--project "$PROJECT" --region "$REGION")
# The shard job, if the deployment has one: its tasks check that they run the
# push service's model (MODEL_VERSION), so it runs the push service's image.
SHARD_JOB="$(out shard_job_name)"

# --- rollback ----------------------------------------------------------------------

# rollback_target SERVICE: prints "<revision serving now> <revision to send all
# traffic to> <its image>" ("?" when unknown), or nothing with --to when
# SERVICE has no such ready revision. Dies when there is nothing to roll back to.
rollback_target() {
  local service="$1" service_json revisions_json ready target current image
  service_json="$(gcloud run services describe "$service" "${GC[@]}" --format=json)" ||
    die "cannot describe service $service"
  # the revision that serves now: the largest traffic share
  current="$(jq -r '[.status.traffic[]? | select((.percent // 0) > 0)] | max_by(.percent) | .revisionName // empty' <<<"$service_json")"
  revisions_json="$(gcloud run revisions list --service "$service" "${GC[@]}" --format=json)" ||
    die "cannot list the revisions of $service"
  # ready revisions, newest first
  ready="$(jq -r '
      map(select(any(.status.conditions[]?; .type == "Ready" and .status == "True")))
      | sort_by(.metadata.creationTimestamp) | reverse | .[].metadata.name' <<<"$revisions_json")"

  if [[ -n "$TO_REVISION" ]]; then
    if grep -qxF -- "$TO_REVISION" <<<"$ready"; then
      printf '%s %s %s' "${current:-?}" "$TO_REVISION" "$(revision_image "$revisions_json" "$TO_REVISION")"
    fi
    return 0
  fi
  [[ -n "$current" ]] || die "cannot tell which revision of $service serves now"
  # the first ready revision older than the current one
  target="$(jq -r --arg cur "$current" '
      (map(select(.metadata.name == $cur)) | .[0].metadata.creationTimestamp) as $t
      | map(select(any(.status.conditions[]?; .type == "Ready" and .status == "True")))
      | map(select($t != null and .metadata.creationTimestamp < $t))
      | sort_by(.metadata.creationTimestamp) | reverse | .[0].metadata.name // empty' <<<"$revisions_json")"
  [[ -n "$target" ]] || die "no ready revision of $service older than $current: nothing to roll back to (nothing was changed)"
  printf '%s %s %s' "$current" "$target" "$(revision_image "$revisions_json" "$target")"
}

# revision_image REVISIONS_JSON REVISION: the image REVISION runs ("?" when unknown).
revision_image() {
  local image
  image="$(jq -r --arg r "$2" 'map(select(.metadata.name == $r)) | .[0].spec.containers[0].image // empty' <<<"$1")"
  printf '%s' "${image:-?}"
}

if ((ROLLBACK)); then
  case "$WHICH" in
    push) SERVICES=("$PUSH_SERVICE") ;;
    predict) SERVICES=("$PREDICT_SERVICE") ;;
    both) SERVICES=("$PUSH_SERVICE" "$PREDICT_SERVICE") ;;
  esac
  # Every target first, so that nothing moves unless all can.
  PLAN=()
  JOB_IMAGE=""
  for service in "${SERVICES[@]}"; do
    line="$(rollback_target "$service")"
    [[ -n "$line" ]] || continue # --to names a revision of the other service
    read -r current target image <<<"$line"
    [[ "$target" != "$current" ]] || die "$target already serves all traffic of $service"
    PLAN+=("$service" "$current" "$target")
    if [[ "$service" == "$PUSH_SERVICE" ]]; then JOB_IMAGE="$image"; fi
  done
  if [[ -n "$TO_REVISION" ]] && ((${#PLAN[@]} == 0)); then
    die "revision $TO_REVISION is not a ready revision of ${SERVICES[*]}"
  fi

  for ((i = 0; i < ${#PLAN[@]}; i += 3)); do
    service="${PLAN[i]}" current="${PLAN[i + 1]}" target="${PLAN[i + 2]}"
    say "rolling $service back: $current -> $target (all traffic)"
    run gcloud run services update-traffic "$service" "${GC[@]}" --to-revisions "$target=100"
  done
  # The shard job follows the push service (its tasks must run its model).
  if [[ -n "$SHARD_JOB" && -n "$JOB_IMAGE" ]]; then
    if [[ "$JOB_IMAGE" == "?" ]]; then
      warn "cannot tell which image the push service's revision runs: job $SHARD_JOB keeps its image; set it to that revision's with gcloud run jobs update $SHARD_JOB --image IMAGE"
    else
      say "pointing job $SHARD_JOB at $JOB_IMAGE (the push service's)"
      run gcloud run jobs update "$SHARD_JOB" "${GC[@]}" --image "$JOB_IMAGE" --quiet ||
        die "the services' traffic moved, but job $SHARD_JOB did not take $JOB_IMAGE (see above): its tasks may refuse inputs dispatched by the push service (another model). Run: gcloud run jobs update $SHARD_JOB --region $REGION --image $JOB_IMAGE"
    fi
  fi
  if ((DRY_RUN)); then
    say "dry run: nothing was changed"
  else
    say "traffic moved; the next ./deploy.sh sends it to new revisions again"
  fi
  for ((i = 0; i < ${#PLAN[@]}; i += 3)); do
    printf '%s %s\n' "${PLAN[i]}" "${PLAN[i + 2]}"
  done
  exit 0
fi

# --- deploy ---------------------------------------------------------------------------

IMAGE_URI="$(need_out image_uri)"
TAG="$(image_tag)"
COMMIT="${TAG%%-dirty-*}"
IMAGE="$IMAGE_URI:$TAG"

if image_exists "$IMAGE"; then
  say "image $IMAGE exists: not rebuilding"
elif [[ "$BUILDER" == cloudbuild ]]; then
  say "building $IMAGE with Cloud Build"
  cloud_build_command "$IMAGE" "$COMMIT" "$REGION"
  retry_lagging build "${BUILD_CMD[@]}" || die "the build failed (see above); nothing was deployed"
else
  docker_build "$IMAGE" "$COMMIT"
fi

# The shard job first: each task refuses an input dispatched for another model
# (MODEL_VERSION), so the job must run the image of the push service revision
# that starts its executions, from the moment that revision takes traffic.
# Updating the job starts nothing and changes no running execution.
PREVIOUS_JOB_IMAGE=""
if [[ -n "$SHARD_JOB" ]]; then
  PREVIOUS_JOB_IMAGE="$(gcloud run jobs describe "$SHARD_JOB" "${GC[@]}" \
    --format='value(spec.template.spec.template.spec.containers[0].image)')" ||
    die "cannot describe job $SHARD_JOB; nothing was changed"
  say "pointing job $SHARD_JOB at $IMAGE"
  run gcloud run jobs update "$SHARD_JOB" "${GC[@]}" --image "$IMAGE" --quiet ||
    die "job $SHARD_JOB did not take $IMAGE (see above); nothing was changed"
fi

# undo_job: the job back to its image, when the push service refused the new one.
undo_job() {
  [[ -n "$SHARD_JOB" && -n "$PREVIOUS_JOB_IMAGE" ]] || return 0
  say "putting job $SHARD_JOB back to $PREVIOUS_JOB_IMAGE"
  run gcloud run jobs update "$SHARD_JOB" "${GC[@]}" --image "$PREVIOUS_JOB_IMAGE" --quiet ||
    die "$PUSH_SERVICE did not take $IMAGE, and job $SHARD_JOB could not be put back: run gcloud run jobs update $SHARD_JOB --region $REGION --image $PREVIOUS_JOB_IMAGE"
}

# Then the push service: it holds the work. Each update waits until the new
# revision is ready (a revision that fails its startup probe on /ready leaves
# traffic where it was and stops the deploy here) ...
DONE=()
for service in "$PUSH_SERVICE" "$PREDICT_SERVICE"; do
  say "rolling $service to $IMAGE"
  if ! run gcloud run services update "$service" "${GC[@]}" --image "$IMAGE" --quiet; then
    if ((${#DONE[@]})); then
      die "$service did not take $IMAGE (see above); ${DONE[*]}${SHARD_JOB:+ and job $SHARD_JOB} already run it: ./deploy.sh --rollback --service push puts them back"
    fi
    undo_job
    die "$service did not take $IMAGE (see above); nothing was changed"
  fi
  # ... and all traffic to it, also after an earlier --rollback pinned traffic.
  run gcloud run services update-traffic "$service" "${GC[@]}" --to-latest --quiet
  DONE+=("$service")
done

if ((DRY_RUN)); then
  say "dry run: nothing was changed"
  exit 0
fi
for service in "$PUSH_SERVICE" "$PREDICT_SERVICE"; do
  REVISION="$(gcloud run services describe "$service" "${GC[@]}" --format='value(status.latestReadyRevisionName)')"
  say "$service now serves $REVISION ($IMAGE)"
  printf '%s %s\n' "$service" "$REVISION"
done
if [[ -n "$SHARD_JOB" ]]; then say "job $SHARD_JOB runs $IMAGE in its next executions"; fi
say "undo with ./deploy.sh --rollback"
