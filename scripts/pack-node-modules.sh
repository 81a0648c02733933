#!/usr/bin/env bash
# Packs the production node_modules (no wrangler, typescript or test tools) into .devcarry/, small
# enough to carry to the GPU machine beside .devnode (the carry limit is 64 MiB in all).
set -euo pipefail
rm -rf .devcarry && mkdir -p .devcarry
cp package.json package-lock.json .devcarry/
(cd .devcarry && npm ci --omit=dev --ignore-scripts --no-audit --no-fund >/dev/null && tar -cJf nm.tar.xz node_modules && rm -rf node_modules package.json package-lock.json)
ls -la .devcarry
