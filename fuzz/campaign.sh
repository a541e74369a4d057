#!/usr/bin/env bash
# A coverage-guided campaign on each fuzz target in turn, with cargo-fuzz and
# libFuzzer (nightly Rust, `cargo install cargo-fuzz`), one process at a time.
#
#   fuzz/campaign.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 600, all three)
#
# Each target starts from fuzz/seeds/<target>/ (committed) plus fuzz/corpus/<target>/
# (what earlier campaigns found; not committed) and uses fuzz/dict/<target>.dict.
# libFuzzer's output goes to fuzz/logs/<target>.log; its last lines (executions,
# coverage, corpus) are printed. A crash stops that target, leaves the input in
# fuzz/artifacts/<target>/ and makes this script exit non-zero.
# To grow the committed seeds with what a campaign found (new coverage only):
#   cargo +nightly fuzz run <target> fuzz/seeds/<target>/libfuzzer fuzz/corpus/<target> \
#       -- -merge=1 -max_len=8192
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(payload topic annotated_csv)
command -v cargo-fuzz >/dev/null || { echo "fuzz/campaign.sh: cargo-fuzz is missing (cargo install cargo-fuzz)" >&2; exit 1; }

mkdir -p fuzz/logs
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "==> $t: ${seconds} s"
  # -max_len: twice the payload size limit, so the oversize branch is reached too.
  if ! cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
      -dict="fuzz/dict/$t.dict" -max_total_time="$seconds" -max_len=8192 \
      -timeout=10 -print_final_stats=1 >"fuzz/logs/$t.log" 2>&1; then
    echo "$t: libFuzzer stopped with a failure (see fuzz/logs/$t.log, fuzz/artifacts/$t/)"
    status=1
  fi
  grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE))|^stat::|^Done|SUMMARY|ERROR' "fuzz/logs/$t.log" || true
  echo "corpus: $(find "fuzz/corpus/$t" -type f | wc -l) files"
done
exit $status
