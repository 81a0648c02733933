#!/usr/bin/env bash
# Packs the Node.js that runs here (binary, stripped, and its headers, which cmake-js builds the
# addons against) into .devnode/node.tar.xz, for a GPU machine that has no Node.js and no internet:
# scripts/gpu-check.sh unpacks it to /opt/node there. Run from anywhere; writes into this
# repository's .devnode/ (git-ignored). See scripts/gpu-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
node_bin=$(readlink -f "$(command -v node)")
prefix=$(dirname "$(dirname "$node_bin")")
[ -f "$prefix/include/node/node_api.h" ] || { echo "pack-node: no Node headers under $prefix/include/node" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/node/bin" "$tmp/node/include"
cp "$node_bin" "$tmp/node/bin/node"
strip "$tmp/node/bin/node" 2>/dev/null || true
cp -r "$prefix/include/node" "$tmp/node/include/node"
mkdir -p .devnode
tar -C "$tmp" -cf - node | xz -T2 -6 > .devnode/node.tar.xz
ls -la .devnode/node.tar.xz
