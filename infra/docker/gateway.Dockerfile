# syntax=docker/dockerfile:1
# Switchboard edge gateway on Node (API keys, tenants, quotas, routing to the backends).
# Build from the repository root:
#   docker build -f infra/docker/gateway.Dockerfile -t switchboard-gateway .
# The gateway needs no native code: `npm ci --ignore-scripts` skips the engine build.
ARG NODE_IMAGE=node:20.19-bookworm-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund
COPY infra/otel/package.json infra/otel/package-lock.json infra/otel/preload.mjs /opt/otel/
RUN npm ci --prefix /opt/otel --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE}
LABEL org.opencontainers.image.title="switchboard-gateway" \
      org.opencontainers.image.description="Switchboard edge gateway (Node)"
WORKDIR /app
COPY --from=deps /opt/otel /opt/otel
COPY --from=deps /app/node_modules node_modules
COPY package.json ./
COPY protocol protocol
COPY gateway gateway
# `switchboard gateway --help` (gateway/node.ts) lists the options; each is also a variable:
# SWITCHBOARD_BACKENDS, SWITCHBOARD_SERVICE_KEY, REDIS_URL, SWITCHBOARD_ADMIN_TOKEN, ...
ENV NODE_ENV=production \
    PORT=8000 \
    OTEL_SERVICE_NAME=switchboard-gateway
# The node image's unprivileged user (uid 1000).
USER node
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8000)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# /health is 503 until a backend answers and the store (Redis) is reachable.
# --hostname is a flag because HOSTNAME is the container's own name in Docker and Kubernetes.
ENTRYPOINT ["node", "--import", "/opt/otel/preload.mjs", "--import", "tsx", "gateway/node.ts", "--hostname", "0.0.0.0"]
