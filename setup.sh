#!/usr/bin/env bash
# setup.sh: create (or bring up to date) the scorer's Google Cloud infrastructure.
#
# Enables the APIs, creates the Artifact Registry repository and the image
# builder first (terraform apply -target), builds and pushes the image once with
# Cloud Build (tagged with the git commit, no local Docker needed), then applies
# the whole Terraform configuration. Running it again is harmless: once the
# services exist their image is deploy.sh's business and nothing is built, an
# image that exists is never rebuilt, and Terraform changes only what differs.
#
# With trigger = "eventarc" (terraform/eventarc.tf) a first run applies once
# more at the end: the push service learns its own URL, the audience of
# Eventarc's tokens, only once it exists.
#
# A fresh project lags: APIs enabled and service accounts created seconds ago
# are refused for a minute or three, and a new log-based metric is unknown to
# Cloud Monitoring for up to ten. Those errors (and only those) are retried
# with a bounded backoff, saying what is awaited (retry_lagging and
# lag_reason in scripts/common.sh).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./setup.sh [options]

Create or update the scorer's infrastructure in a Google Cloud project
(Terraform in terraform/). The first run also builds the image of the current
git commit (Cloud Build) and creates the service with it; later runs only
update the infrastructure (new code goes out with ./deploy.sh). Safe to repeat.

Options:
  --project ID        project to use (default: $GOOGLE_CLOUD_PROJECT, then
                      $CLOUDSDK_CORE_PROJECT, then `gcloud config get-value project`)
  --region REGION     region of the service, repository and builds
                      (default: terraform's region variable, europe-west1)
  --builder KIND      cloudbuild (default: gcloud builds submit, no local Docker)
                      or docker (docker build + push on this machine)
  --allow-dirty       build from a work tree with uncommitted changes
                      (the tag becomes <commit>-dirty-<UTC time>)
  -y, --yes           apply without asking for confirmation
  --dry-run           print the commands that would change something instead of
                      running them (read-only lookups still run)
  -h, --help          show this help

Needs: gcloud, terraform (>= 1.5), jq, git (and docker with --builder docker).
Settings beyond project and region: terraform/terraform.tfvars
(see terraform/terraform.tfvars.example).
EOF
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# TF_DIR, DRY_RUN, say/warn/die, run, need_tools, read_outputs/out, the image
# build, retry_lagging
# shellcheck source=scripts/common.sh
source "$ROOT/scripts/common.sh"
YES=0
PROJECT=""
REGION=""
BUILDER="cloudbuild"

# read_outputs_if_any: read_outputs where there may be no state to read yet
# (a new project, a --dry-run before init): then there are none.
read_outputs_if_any() {
  TF_OUT="$(terraform -chdir="$TF_DIR" output -json 2>/dev/null)" || TF_OUT='{}'
  [[ -n "$TF_OUT" ]] || TF_OUT='{}'
}
# need_out NAME: an output the next step cannot do without (a placeholder in --dry-run).
need_out() {
  local v
  v="$(out "$1")"
  if [[ -z "$v" ]]; then
    ((DRY_RUN)) && {
      printf '<%s>' "$1"
      return 0
    }
    die "terraform output has no '$1' (did the apply above fail?)"
  fi
  printf '%s' "$v"
}

while (($#)); do
  case "$1" in
    --project) PROJECT="${2:?--project needs a value}"; shift 2 ;;
    --project=*) PROJECT="${1#*=}"; shift ;;
    --region) REGION="${2:?--region needs a value}"; shift 2 ;;
    --region=*) REGION="${1#*=}"; shift ;;
    --builder) BUILDER="${2:?--builder needs a value}"; shift 2 ;;
    --builder=*) BUILDER="${1#*=}"; shift ;;
    --allow-dirty) ALLOW_DIRTY=1; shift ;;
    -y | --yes) YES=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) bad_option "$1" ;;
  esac
done

# --- preflight -------------------------------------------------------------------

case "$BUILDER" in
  cloudbuild) need_tools gcloud terraform jq git ;;
  docker) need_tools gcloud terraform jq git docker ;;
  *) die "--builder must be cloudbuild or docker, not '$BUILDER'" ;;
esac
[[ -d "$TF_DIR" ]] || die "no Terraform configuration at $TF_DIR"

if [[ -z "$PROJECT" ]]; then
  PROJECT="${GOOGLE_CLOUD_PROJECT:-${CLOUDSDK_CORE_PROJECT:-}}"
fi
if [[ -z "$PROJECT" ]]; then
  PROJECT="$(gcloud config get-value project 2>/dev/null || true)"
fi
[[ -n "$PROJECT" && "$PROJECT" != "(unset)" ]] ||
  die "no Google Cloud project set: pass --project ID, export GOOGLE_CLOUD_PROJECT=ID, or run 'gcloud config set project ID'"

if ((!YES && !DRY_RUN)) && [[ ! -t 0 ]]; then
  die "no terminal to confirm 'terraform apply' on: pass --yes to apply without asking"
fi

TF_VARS=(-var "project_id=$PROJECT")
if [[ -n "$REGION" ]]; then TF_VARS+=(-var "region=$REGION"); fi
# (possibly empty: expanded as ${APPLY_FLAGS[@]+"${APPLY_FLAGS[@]}"} for bash 3.2)
APPLY_FLAGS=()
if ((YES)); then APPLY_FLAGS=(-input=false -auto-approve); fi

# --- 1. APIs Terraform itself needs ------------------------------------------------

say "project $PROJECT: enabling the Service Usage and Resource Manager APIs"
run gcloud services enable serviceusage.googleapis.com cloudresourcemanager.googleapis.com --project "$PROJECT"

# --- 2. Terraform init; refuse a state that belongs to another project --------------

say "terraform init"
run terraform -chdir="$TF_DIR" init -input=false

# (project_id is written by the first apply below, targeted or not: it derives
# from the Artifact Registry repository, see terraform/outputs.tf)
read_outputs_if_any
STATE_PROJECT="$(out project_id)"
if [[ -n "$STATE_PROJECT" && "$STATE_PROJECT" != "$PROJECT" ]]; then
  die "the Terraform state in $TF_DIR belongs to project '$STATE_PROJECT', not '$PROJECT': use --project $STATE_PROJECT, or another state (backend) for the new project"
fi

# --- 3. What the image build needs, before the service ------------------------------

# The Pub/Sub service agent, which signs the pushes and moves dead letters, is
# made sure to exist by Terraform (google_project_service_identity.pubsub).
# The accounts the services and the shard job run as, and Pub/Sub pushes (or
# the Eventarc trigger signs) as, are created here too, though only the full
# apply uses them: by then they are minutes old, past the minute or three in
# which IAM refuses a new account ("iam.serviceaccounts.actAs denied ... (or it
# may not exist)", "Gaia id not found"). (shard and events have a count: a
# target of none of their instances creates nothing.)
say "terraform apply: APIs, Artifact Registry repository, image builder, the services' accounts"
retry_lagging apply terraform -chdir="$TF_DIR" apply ${APPLY_FLAGS[@]+"${APPLY_FLAGS[@]}"} "${TF_VARS[@]}" \
  -target=google_project_service.apis \
  -target=google_artifact_registry_repository.images \
  -target=google_artifact_registry_repository_iam_member.builder_pushes_images \
  -target=google_storage_bucket_iam_member.builder_reads_sources \
  -target=google_project_iam_member.builder_writes_logs \
  -target=google_service_account.runtime \
  -target=google_service_account.predict \
  -target=google_service_account.push \
  -target=google_service_account.shard \
  -target=google_service_account.events ||
  die "the first apply failed (see above). It is safe to run ./setup.sh again"

# Only outputs that derive from the resources just targeted are in the state
# now (terraform/outputs.tf): region, image_uri, build_service_account,
# build_bucket. The project is $PROJECT.
read_outputs_if_any
REGION_OUT="$(need_out region)"
IMAGE_URI="$(need_out image_uri)"
TFVARS_FILE="$TF_DIR/image.auto.tfvars.json"

# --- 4. The image, once ---------------------------------------------------------------

# The services exist when both are in the outputs and the state holds neither
# tainted. A full apply that failed halfway leaves one without outputs (never
# created) or tainted (created, then failed, e.g. its first revision never got
# ready): the next apply creates or replaces it with the image_tag it is given,
# so this commit is built for it (the code may have been fixed meanwhile).
SERVICES_UP=0
if [[ -n "$(out push_service_url)" && -n "$(out predict_service_url)" ]]; then
  if TAINTED="$(tainted_services)"; then
    if [[ -z "$TAINTED" ]]; then
      SERVICES_UP=1
    else
      say "$(tr '\n' ' ' <<<"$TAINTED")is tainted (its create failed halfway; this apply replaces it): building this commit for it"
    fi
  else
    say "cannot read the Terraform state (terraform show): building this commit, in case a service needs it"
  fi
elif [[ -n "$(out push_service_url)$(out predict_service_url)" ]]; then
  say "only one of the two services is in the Terraform state (an earlier apply stopped halfway): building this commit for the other"
fi

if ((SERVICES_UP)); then
  # The services exist: new code reaches them through deploy.sh, and Terraform
  # ignores their image. Keep the tag they were created with.
  TAG=""
  [[ -f "$TFVARS_FILE" ]] && TAG="$(jq -r '.image_tag // empty' "$TFVARS_FILE" 2>/dev/null || true)"
  [[ -n "$TAG" ]] || TAG="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  say "the services exist: not building (roll out new code with ./deploy.sh)"
else
  TAG="$(image_tag)"
  COMMIT="${TAG%%-dirty-*}"
  IMAGE="$IMAGE_URI:$TAG"
  if [[ "$IMAGE_URI" != "<"* ]] && image_exists "$IMAGE"; then
    say "image $IMAGE exists: not rebuilding"
  elif [[ "$BUILDER" == cloudbuild ]]; then
    say "building $IMAGE with Cloud Build (a few minutes)"
    cloud_build_command "$IMAGE" "$COMMIT" "$REGION_OUT"
    # The builder account and its grants were created moments ago: Cloud Build
    # may refuse them for a minute or three (retried, see retry_lagging).
    retry_lagging build "${BUILD_CMD[@]}" ||
      die "the build failed (see above); fix it and run ./setup.sh again (it is safe to repeat)"
  else
    docker_build "$IMAGE" "$COMMIT"
  fi
fi

# The tag the service is created with, for later plain `terraform apply` runs
# (Terraform ignores image changes after that: deploy.sh rolls out new ones).
if ((DRY_RUN)); then
  printf '+ write %q: {"image_tag": "%s"}\n' "$TFVARS_FILE" "$TAG"
else
  jq -n --arg tag "$TAG" '{image_tag: $tag}' >"$TFVARS_FILE"
fi

# --- 5. Everything else ----------------------------------------------------------------

# The first time, this creates the log-based metrics, then pauses (time_sleep,
# log_metric_propagation_seconds) before the SLOs and alerts that read them;
# should Cloud Monitoring still answer 404 for them, the apply is retried.
say "terraform apply: buckets, Pub/Sub, the push and predict services, IAM, monitoring (the first time: ~5 min)"
retry_lagging apply terraform -chdir="$TF_DIR" apply ${APPLY_FLAGS[@]+"${APPLY_FLAGS[@]}"} "${TF_VARS[@]}" -var "image_tag=$TAG" ||
  die "the apply failed (see above). It is safe to run ./setup.sh again: Terraform creates only what is missing"

if ((DRY_RUN)); then
  say "dry run: nothing was changed (with trigger = eventarc, a first run also applies once more, see step 6)"
  exit 0
fi

# --- 6. Eventarc: the push service's own URL is the audience of its tokens ------------

# With trigger = "eventarc" the push service must require the audience
# Eventarc's tokens carry, its own URL, which exists only once the service
# does (terraform/eventarc.tf). Read it back, keep it for later applies
# (eventarc.auto.tfvars.json) and apply once more: a new revision of the push
# service. Pushes refused meanwhile (401) are retried by Pub/Sub.
read_outputs_if_any
EVENTARC_TFVARS="$TF_DIR/eventarc.auto.tfvars.json"
if [[ "$(out trigger)" == eventarc ]]; then
  URL="$(need_out push_service_url)"
  if [[ "$(out push_audience)" != "$URL" ]]; then
    say "trigger = eventarc: the push service now requires Eventarc's token audience, its URL $URL"
    jq -n --arg url "$URL" '{eventarc_push_audience: $url}' >"$EVENTARC_TFVARS"
    retry_lagging apply terraform -chdir="$TF_DIR" apply ${APPLY_FLAGS[@]+"${APPLY_FLAGS[@]}"} "${TF_VARS[@]}" -var "image_tag=$TAG" ||
      die "the apply that sets the push service's token audience failed (see above). It is safe to run ./setup.sh again"
    read_outputs_if_any
  fi
fi

if [[ "$(jq -r '(.alert_notification_channels.value // []) | length' <<<"$TF_OUT")" == 0 ]]; then
  warn "no alert channel is configured: the SLO, dead-letter and failed-file alerts fire, but nobody is told. Set alert_email (or notification_channels) in $TF_DIR/terraform.tfvars and run ./setup.sh again"
fi
cat <<EOF

The scorer is set up in project $PROJECT ($(out region)).
  push service:    $(out push_service_name)  $(out push_service_url)
  predict service: $(out predict_service_name)  $(out predict_service_url)/predict
  input bucket:    gs://$(out input_bucket)/
  output bucket:   gs://$(out output_bucket)/
  new files:       $(if [[ "$(out trigger)" == eventarc ]]; then printf 'Eventarc trigger %s' "$(out eventarc_trigger)"; else printf 'Pub/Sub, dead letters on %s' "$(out dead_letter_subscription)"; fi)

Try it:
  gsutil cp data/scl_flights_2017.csv gs://$(out input_bucket)/
  gsutil ls -r gs://$(out output_bucket)/
EOF
