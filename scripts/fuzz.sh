#!/usr/bin/env bash
# Fuzzes the gateway's request decoding (Fuzz/RequestFuzzer: routing, headers, signature, JSON,
# ids, ranges) with libFuzzer for a given time, starting from the committed seed corpus.
#
#   scripts/fuzz.sh [seconds]       default 60; the test command runs it for a few seconds
#
# The build lives in .build-fuzz (RESERVATION_FUZZ_BUILD=1: the decoding targets instrumented
# with -sanitize=fuzzer, libFuzzer linked in; ignored by git). Inputs
# the fuzzer finds interesting go to .local/fuzz-corpus; a crash leaves its input in
# .local/fuzz-artifacts and fails this script. Replay one (an ordinary build of the same target
# is a replay tool) with:
#   swift run RequestFuzzer .local/fuzz-artifacts/crash-<hash>
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_TO_RUN=${1:-60}

RESERVATION_FUZZ_BUILD=1 swift build --scratch-path .build-fuzz --product RequestFuzzer >&2
mkdir -p .local/fuzz-corpus .local/fuzz-artifacts
.build-fuzz/debug/RequestFuzzer -max_total_time="$SECONDS_TO_RUN" -max_len=4096 -timeout=10 -rss_limit_mb=4096 \
  -artifact_prefix=.local/fuzz-artifacts/ -print_final_stats=1 .local/fuzz-corpus Fuzz/corpus/request 2>&1 | tail -25
echo "fuzz: no crash in ${SECONDS_TO_RUN} s" >&2
