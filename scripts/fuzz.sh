#!/usr/bin/env bash
# Fuzzes with libFuzzer for a given time, starting from the committed seed corpora, split between
# two targets:
#   - Fuzz/RequestFuzzer: the gateway's request decoding (routing, headers, signature, JSON, ids,
#     ranges), seeds in Fuzz/corpus/request;
#   - Fuzz/TokenFuzzer: consumer token verification and key parsing (ConsumerTokens), seeds in
#     Fuzz/corpus/token.
#
#   scripts/fuzz.sh [seconds] [target]   default 60 s in all, half each (the token half rounded
#                                        down); a target (RequestFuzzer or TokenFuzzer) alone
#                                        gets all of it. The test command runs it for a few seconds.
#
# The build lives in .build-fuzz (RESERVATION_FUZZ_BUILD=1: the code under fuzz instrumented
# with -sanitize=fuzzer, libFuzzer linked in; ignored by git). Inputs the fuzzer finds interesting
# go to .local/fuzz-corpus (requests) and .local/fuzz-corpus-token; a crash leaves its input in
# .local/fuzz-artifacts and fails this script. Replay one (an ordinary build of the same target
# is a replay tool) with:
#   swift run RequestFuzzer .local/fuzz-artifacts/crash-<hash>
#   swift run TokenFuzzer .local/fuzz-artifacts/crash-<hash>
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_TO_RUN=${1:-60}
ONLY=${2:-}

# fuzz <target> <seconds> <max input length> <corpus dir> <seed dir>
fuzz() {
  [ "$2" -gt 0 ] || return 0
  RESERVATION_FUZZ_BUILD=1 swift build --scratch-path .build-fuzz --product "$1" >&2
  mkdir -p "$4" .local/fuzz-artifacts
  ".build-fuzz/debug/$1" -max_total_time="$2" -max_len="$3" -timeout=10 -rss_limit_mb=4096 \
    -artifact_prefix=.local/fuzz-artifacts/ -print_final_stats=1 "$4" "$5" 2>&1 | tail -25
  echo "fuzz: $1: no crash in $2 s" >&2
}

case "$ONLY" in
  "") TOKEN_SECONDS=$((SECONDS_TO_RUN / 2)); REQUEST_SECONDS=$((SECONDS_TO_RUN - TOKEN_SECONDS)) ;;
  RequestFuzzer) REQUEST_SECONDS=$SECONDS_TO_RUN; TOKEN_SECONDS=0 ;;
  TokenFuzzer) REQUEST_SECONDS=0; TOKEN_SECONDS=$SECONDS_TO_RUN ;;
  *) echo "fuzz: unknown target $ONLY (RequestFuzzer or TokenFuzzer)" >&2; exit 2 ;;
esac
fuzz RequestFuzzer "$REQUEST_SECONDS" 4096 .local/fuzz-corpus Fuzz/corpus/request
# Up to a mode byte and a token one byte over the 4096-byte limit.
fuzz TokenFuzzer "$TOKEN_SECONDS" 4200 .local/fuzz-corpus-token Fuzz/corpus/token
