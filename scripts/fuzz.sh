#!/usr/bin/env bash
# Runs the property tests ("fuzz_*") over request validation, bearer-token
# and tokens-file parsing, and page-token decoding for longer than the
# normal test run does (256 cases each there).
#
#   CASES=1000000 bash scripts/fuzz.sh        (default 100000 cases per test)
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES="${CASES:-100000}"
echo "==> $PROPTEST_CASES cases per property"
cargo test --release -p orgauth-security -p org-server -p auth-server --lib fuzz
