#!/usr/bin/env bash
# Runs the whole test suite: unit tests, end-to-end tests over real server
# processes, and the cross-language tests (grpcurl via reflection, a Python
# client generated from proto/).
#
# The cross-language tools (grpcurl, grpcio, Google's LRO client, the
# Prometheus parser; tests/python/requirements.txt) are installed into a
# virtualenv under target/, so nothing is installed system-wide.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/tools-venv
if [ ! -x "$venv/bin/grpcurl" ] || ! "$venv/bin/python" -c 'import grpc, grpc_tools, google.api_core, prometheus_client' 2>/dev/null; then
    echo "==> installing test tools into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
export ORGAUTH_TOOLS_BIN="$PWD/$venv/bin"

# buf (from the npm registry; scripts/install-buf.sh) checks the protos
# against buf's standard lint rules (DESIGN.md requires them to pass with no
# exceptions).
buf=$(bash scripts/install-buf.sh)
echo "==> buf lint proto/"
(cd proto && "$buf" lint)

echo "==> cargo test --workspace"
cargo test --workspace "$@"
