#!/usr/bin/env bash
# destroy.sh: delete the scorer's infrastructure, its buckets' contents included.
#
# Asks before deleting anything unless --yes (and refuses without a terminal to
# ask on). The order matters, because the push service may be scoring files
# while this runs:
#   1. stop intake: delete the bucket notification, then the push subscription
#      (or the Eventarc trigger, with trigger = "eventarc"; terraform destroy
#      -target): no new work arrives;
#   2. drain: wait until every push already in flight has ended (a push request
#      lasts at most the request timeout; Cloud Run cannot be asked whether
#      requests are still running, so this is a bounded wait, with a message);
#   3. empty the input and output buckets (every object version): nothing
#      writes to them any more;
#   4. terraform destroy (it refuses non-empty buckets).
# Every step tolerates "already gone", and what a re-run needs is recorded in
# terraform/.destroy-progress.json (Terraform drops all outputs when a destroy
# fails halfway): after any failure, running it again finishes the job.
#
# Before step 1 it reads the state: a resource with deletion protection on
# (deletion_protection = true) would make step 4 fail after intake had been
# stopped and the buckets emptied, and the obvious way out, a plain apply,
# would turn intake back on. So it stops there, deleting nothing, and prints the
# targeted apply that lifts the protection alone. It does not lift it itself:
# deletion protection is there to make an operator decide, and a script that
# turned it off on its own would make it protect against nothing.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./destroy.sh [--yes] [--dry-run] [--drain-seconds N] [--project ID]

Delete everything ./setup.sh created: stops intake (the bucket notification and
the push subscription, or the Eventarc trigger), waits for the pushes in
flight to end, empties the
input and output buckets (every object version: inputs, predictions,
manifests), then terraform destroy. The APIs stay enabled; the project itself
is not deleted. After a failure, run it again: it resumes.

Options:
  -y, --yes          do not ask for confirmation (needed without a terminal)
  --dry-run          print the commands that would delete something instead of
                     running them (read-only lookups still run)
  --drain-seconds N  how long to let pushes in flight finish after intake stops
                     (default: the push request timeout, terraform output
                     push_request_timeout_seconds; 0 when nothing is running)
  --project ID       the project, when the state has no outputs left and no
                     record of an earlier run (a destroy that failed elsewhere)
  -h, --help         show this help

Needs: gcloud, terraform, jq, and the Terraform state written by ./setup.sh.
EOF
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# TF_DIR, DRY_RUN, say/warn/die, run, need_tools, read_outputs/out, the image build
# shellcheck source=scripts/common.sh
source "$ROOT/scripts/common.sh"
YES=0
DRAIN_SECONDS=""
PROJECT_FLAG=""
PROGRESS="$TF_DIR/.destroy-progress.json"

# The record of this destroy (read back by a re-run).
progress() { jq -r --arg k "$1" '.[$k] // empty' "$PROGRESS" 2>/dev/null || true; }
record() {
  ((DRY_RUN)) && return 0
  local tmp="$PROGRESS.tmp"
  jq -n --arg project "$PROJECT" --arg region "$REGION" --argjson drain "$DRAIN" \
    --arg stopped "$INTAKE_STOPPED_AT" '{project: $project, region: $region,
      buckets: $ARGS.positional, drain_seconds: $drain,
      intake_stopped_at: (if $stopped == "" then null else ($stopped | tonumber) end)}' \
    --args ${BUCKETS[@]+"${BUCKETS[@]}"} >"$tmp"
  mv "$tmp" "$PROGRESS"
}

while (($#)); do
  case "$1" in
    -y | --yes) YES=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --drain-seconds) DRAIN_SECONDS="${2:?--drain-seconds needs a number}"; shift 2 ;;
    --drain-seconds=*) DRAIN_SECONDS="${1#*=}"; shift ;;
    --project) PROJECT_FLAG="${2:?--project needs a value}"; shift 2 ;;
    --project=*) PROJECT_FLAG="${1#*=}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) bad_option "$1" ;;
  esac
done

# --- preflight -------------------------------------------------------------------

[[ -z "$DRAIN_SECONDS" || "$DRAIN_SECONDS" =~ ^[0-9]+$ ]] || die "--drain-seconds takes a whole number of seconds, not '$DRAIN_SECONDS'"
need_tools gcloud terraform jq
[[ -d "$TF_DIR" ]] || die "no Terraform configuration at $TF_DIR"

read_outputs
PROJECT="$(out project_id)"
INTAKE_STOPPED_AT=""
BUCKETS=()
if [[ -n "$PROJECT" ]]; then
  # A state with its outputs: a first run (or a re-run after a failure that
  # left them, e.g. while emptying a bucket).
  REGION="$(out region)"
  DRAIN="$(out push_request_timeout_seconds)"
  for name in input_bucket output_bucket; do
    b="$(out "$name")"
    if [[ -n "$b" ]]; then BUCKETS+=("$b"); fi
  done
  [[ "$(progress project)" != "$PROJECT" ]] || INTAKE_STOPPED_AT="$(progress intake_stopped_at)"
  # (stopping intake removes the push subscription, and with it the
  # push_request_timeout_seconds output: a re-run keeps the recorded one)
  [[ -n "$DRAIN" ]] || DRAIN="$(progress drain_seconds)"
elif [[ -f "$PROGRESS" ]]; then
  # An earlier run stopped halfway: a failed terraform destroy leaves no outputs.
  PROJECT="$(progress project)"
  REGION="$(progress region)"
  DRAIN="$(progress drain_seconds)"
  INTAKE_STOPPED_AT="$(progress intake_stopped_at)"
  while IFS= read -r b; do
    if [[ -n "$b" ]]; then BUCKETS+=("$b"); fi
  done < <(jq -r '.buckets[]?' "$PROGRESS")
  say "resuming the destroy recorded in $PROGRESS"
elif [[ -z "$(terraform -chdir="$TF_DIR" state list 2>/dev/null)" ]]; then
  say "nothing to destroy: the Terraform state in $TF_DIR is empty (already destroyed, or its state is elsewhere: see docs/OPERATIONS.md, \"Remote state\")"
  exit 0
else
  # Resources in the state, but no outputs and no record (a destroy that
  # failed on another machine): the project must be named.
  [[ -n "$PROJECT_FLAG" ]] ||
    die "the Terraform state in $TF_DIR has resources but no outputs (a destroy that failed halfway) and there is no $PROGRESS: pass --project ID to finish it (empty the buckets yourself if terraform destroy refuses them)"
  PROJECT="$PROJECT_FLAG"
  REGION=""
  DRAIN=""
fi
[[ -z "$PROJECT_FLAG" || "$PROJECT_FLAG" == "$PROJECT" ]] ||
  die "--project $PROJECT_FLAG, but the Terraform state in $TF_DIR belongs to project $PROJECT"
[[ -n "$DRAIN" ]] || DRAIN=600
[[ -z "$DRAIN_SECONDS" ]] || DRAIN="$DRAIN_SECONDS"

# --- deletion protection: refuse before anything is deleted -----------------------

TF_VARS=(-var "project_id=$PROJECT")
if [[ -n "$REGION" ]]; then TF_VARS+=(-var "region=$REGION"); fi
# image_tag is only read when the services are created; any value does here.
TF_VARS+=(-var "image_tag=${SCORER_IMAGE_TAG:-destroy}")

# lift_protection_command ADDRESS...: the targeted apply that turns deletion
# protection off on those resources alone (and on what they depend on, which
# holds no intake: the notification and the push subscription depend on the
# services, not the other way round).
lift_protection_command() {
  local word
  printf 'terraform -chdir=%q apply' "$TF_DIR"
  for word in "${TF_VARS[@]}" -var deletion_protection=false; do printf ' %q' "$word"; done
  for word in "$@"; do printf ' -target=%s' "$word"; done
}

# The resources of the state with deletion protection on, as Terraform
# addresses without instance keys, one a line (what -target takes).
PROTECTED=()
if STATE_JSON="$(terraform -chdir="$TF_DIR" show -json 2>/dev/null)"; then
  while IFS= read -r address; do
    if [[ -n "$address" ]]; then PROTECTED+=("$address"); fi
  done < <(jq -r '[.values.root_module.resources[]? | select(.values.deletion_protection == true)
      | .address | sub("\\[.*\\]$"; "")] | unique | .[]' <<<"$STATE_JSON")
else
  warn "could not read the Terraform state (terraform show) to check deletion protection; going on"
fi
if ((${#PROTECTED[@]})); then
  die "deletion protection is on for ${PROTECTED[*]} (deletion_protection = true): terraform destroy would refuse them at the end, after intake had been stopped and the buckets emptied. Nothing was deleted. To take the scorer down, set deletion_protection = false in $TF_DIR/terraform.tfvars, lift it from the state with
  $(lift_protection_command "${PROTECTED[@]}")
(a targeted apply of those resources and what they depend on: intake is not turned back on), then run ./destroy.sh again"
fi

# --- confirmation ------------------------------------------------------------------

if ((!YES && !DRY_RUN)); then
  [[ -t 0 ]] || die "refusing to delete without --yes: there is no terminal to ask on. Nothing was deleted."
  printf 'This deletes the scorer in project %s, and every object in:\n' "$PROJECT" >&2
  if ((${#BUCKETS[@]})); then printf '  gs://%s\n' "${BUCKETS[@]}" >&2; fi
  printf 'Type the project ID to confirm: ' >&2
  read -r answer || answer=""
  [[ "$answer" == "$PROJECT" ]] || die "not confirmed. Nothing was deleted."
fi
record

# --- 1. stop intake: the notification first, then the push subscription ------------

# (the notification depends on the subscription, so Terraform deletes it
# first; with trigger = "eventarc" neither exists and the trigger goes; any
# of them may be gone already: then this changes nothing)
say "stopping intake: deleting the input bucket's notification, then the push subscription (or the Eventarc trigger)"
run terraform -chdir="$TF_DIR" destroy -input=false -auto-approve "${TF_VARS[@]}" \
  -target=google_storage_notification.input_finalize \
  -target=google_pubsub_subscription.push \
  -target=google_eventarc_trigger.input_finalized ||
  die "could not stop intake (see above); nothing else was deleted. Run ./destroy.sh again"
if [[ -z "$INTAKE_STOPPED_AT" ]]; then
  INTAKE_STOPPED_AT="$(date +%s)"
  record
fi

# --- 2. drain: let the pushes already in flight end ----------------------------------

# Cloud Run cannot be asked whether requests are still running; a push request
# ends within the request timeout (the subscription's ack deadline), so wait
# that long after intake stopped (less what an earlier run has waited).
elapsed=$(($(date +%s) - INTAKE_STOPPED_AT))
remaining=$((DRAIN - elapsed))
if ((remaining > 0)); then
  if ((DRY_RUN)); then
    say "would wait ${remaining}s for the pushes in flight to end (--drain-seconds)"
  else
    say "draining: waiting ${remaining}s for the pushes already in flight to end (a push request lasts at most ${DRAIN}s; --drain-seconds 0 skips this when nothing runs)"
    sleep "$remaining"
  fi
else
  say "drained: intake stopped ${elapsed}s ago (pushes last at most ${DRAIN}s)"
fi

# --- 3. empty the buckets (terraform destroy refuses non-empty ones) -------------------

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
  run gcloud storage rm --recursive --all-versions --project "$PROJECT" "gs://$b/**" ||
    die "could not empty gs://$b (see above). Run ./destroy.sh again: it resumes here"
done

# --- 4. and the rest ---------------------------------------------------------------------

say "terraform destroy"
ERR="$(mktemp "${TMPDIR:-/tmp}/scorer-destroy.XXXXXX")"
rc=0
run terraform -chdir="$TF_DIR" destroy -input=false -auto-approve "${TF_VARS[@]}" 2>"$ERR" || rc=$?
cat "$ERR" >&2
if ((rc)); then
  if grep -qi 'deletion_protection' "$ERR"; then
    rm -f "$ERR"
    die "terraform destroy refused a resource with deletion protection (see above). Intake is stopped and the buckets are empty: do not run ./setup.sh or a plain terraform apply, which would turn intake back on. Set deletion_protection = false in $TF_DIR/terraform.tfvars, lift it from that resource alone with
  $(lift_protection_command 'ADDRESS')
(ADDRESS: the resource named above, e.g. google_cloud_run_v2_service.services), then run ./destroy.sh again: it resumes"
  fi
  rm -f "$ERR"
  die "terraform destroy failed (see above). Fix the cause and run ./destroy.sh again: it resumes (intake is stopped, the drain is done)"
fi
rm -f "$ERR"

if ((DRY_RUN)); then
  say "dry run: nothing was deleted"
else
  rm -f "$TF_DIR/image.auto.tfvars.json" "$TF_DIR/eventarc.auto.tfvars.json" "$PROGRESS"
  say "done: the scorer is gone from $PROJECT (the APIs stay enabled)"
fi
