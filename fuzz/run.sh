#!/usr/bin/env bash
# Runs fuzz targets with the project's options: no sanitizer (the code under
# test forbids unsafe), debug assertions and overflow checks on, the POP3
# dictionary, the committed seeds as a read-only second corpus and
# fuzz/corpus/<target> (ignored by git) as the growing one.
#
#   fuzz/run.sh build                  build every target
#   fuzz/run.sh TARGET SECONDS [ARGS]  run one target (extra libFuzzer args)
#   fuzz/run.sh all SECONDS            run every target in turn
set -euo pipefail
cd "$(dirname "$0")"
TARGETS=(command_line session_bytes session_chunking session_ops dot_stuffing procedure sasl proxy_header)
FLAGS=(--sanitizer none --debug-assertions)

build() { cargo +nightly fuzz build "${FLAGS[@]}"; }

run() {
  local target=$1 seconds=$2
  shift 2
  mkdir -p "corpus/$target"
  cargo +nightly fuzz run "${FLAGS[@]}" "$target" "corpus/$target" "seeds/$target" -- \
    -dict=pop3.dict -timeout=10 -max_total_time="$seconds" -print_final_stats=1 "$@"
}

case "${1:-}" in
  build) build ;;
  all)
    build
    for t in "${TARGETS[@]}"; do
      echo "== fuzz $t (${2:?seconds}s)"
      run "$t" "$2"
    done
    ;;
  "") echo "usage: $0 build | all SECONDS | TARGET SECONDS [libFuzzer args]" >&2; exit 2 ;;
  *) run "$@" ;;
esac
