#!/usr/bin/env bash
# Runs the whole test suite: unit tests, end-to-end tests over real server
# processes, and the cross-language tests (grpcurl via reflection, a Python
# client generated from proto/).
#
# The cross-language tools (grpcurl, grpcio) are installed into a virtualenv
# under target/, so nothing is installed system-wide.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/tools-venv
if [ ! -x "$venv/bin/grpcurl" ] || ! "$venv/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null; then
    echo "==> installing test tools into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
export ORGAUTH_TOOLS_BIN="$PWD/$venv/bin"

# buf, from the npm registry, checks the protos against buf's standard lint
# rules (DESIGN.md requires them to pass with no exceptions).
buf_dir=target/tools-node
if [ ! -x "$buf_dir/node_modules/.bin/buf" ]; then
    echo "==> installing buf into $buf_dir"
    mkdir -p "$buf_dir"
    npm install --silent --prefix "$buf_dir" @bufbuild/buf >/dev/null
fi
echo "==> buf lint proto/"
(cd proto && "../$buf_dir/node_modules/.bin/buf" lint)

echo "==> cargo test --workspace"
cargo test --workspace "$@"
