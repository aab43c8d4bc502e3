# shellcheck shell=bash
# Sourced by .ci/supply-chain.sh and fuzz/run.sh: a cargo-installed tool,
# pinned, kept in the cache. The caller defines `fatal MESSAGE` (print, exit 1).

# cargo_tool_need CRATE VERSION ROOT BUILD_DIR [HINT]: makes sure
# ROOT/bin/CRATE reports "CRATE VERSION", else installs it from crates.io into
# ROOT (nice, its own target directory BUILD_DIR, kept only until the install
# succeeds so an interrupted build resumes from it). HINT is added to the
# message when the install fails.
cargo_tool_need() {
  local crate="$1" version="$2" root="$3" build_dir="$4" hint="${5:-}"
  local bin="$root/bin/$crate"
  if [[ -x "$bin" && "$("$bin" --version 2>/dev/null)" == "$crate $version" ]]; then
    return 0
  fi
  command -v cargo >/dev/null 2>&1 ||
    fatal "cargo is missing (needed to install and run $crate): install Rust 1.95 with rustup (https://rustup.rs)"
  printf 'installing %s %s into %s (cargo install from crates.io, a few minutes)\n' "$crate" "$version" "$root"
  rm -rf "$root"
  mkdir -p "$(dirname "$root")"
  if ! CARGO_TARGET_DIR="$build_dir" nice -n 19 \
    cargo install --locked "$crate" --version "=$version" --root "$root"; then
    fatal "could not install $crate $version from crates.io: install it by hand with 'cargo install --locked $crate --version =$version --root $root'${hint:+ ($hint)}"
  fi
  rm -rf "$build_dir"
  [[ "$("$bin" --version 2>/dev/null)" == "$crate $version" ]] ||
    fatal "$bin is not $crate $version after installing it: delete $root and rerun"
}
