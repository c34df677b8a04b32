#!/usr/bin/env bash
# Installs buf (the protobuf linter and breaking-change checker) from the
# npm registry into target/tools-node, unless that version is there already,
# and prints the path of its binary on stdout; progress goes to stderr.
# scripts/test.sh (buf lint) and .ci/run (buf breaking) both use it:
#
#     buf=$(bash scripts/install-buf.sh)
#
# BUF_VERSION overrides the pinned version.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${BUF_VERSION:-1.75.0}
dir=target/tools-node
bin="$PWD/$dir/node_modules/.bin/buf"

if [ ! -x "$bin" ] || [ "$("$bin" --version 2>/dev/null)" != "$version" ]; then
    echo "==> installing buf $version into $dir" >&2
    mkdir -p "$dir"
    npm install --silent --no-audit --no-fund --prefix "$dir" "@bufbuild/buf@$version" >/dev/null
fi
echo "$bin"
