# syntax=docker/dockerfile:1
# Switchboard backend: one process per GPU. Build from the repository root:
#   docker build -f infra/docker/backend.Dockerfile -t switchboard-backend .
# (BuildKit reads backend.Dockerfile.dockerignore beside this file.)
#
# Stage 1 builds the native engines (CPU addon, and the CUDA addon with cuBLAS) with nvcc for
# Ampere (sm_80) and Hopper (sm_90): scripts/build-native.mjs passes SWITCHBOARD_CUDA_ARCHS to
# cmake as CMAKE_CUDA_ARCHITECTURES, and CMake itself initialises it from CUDAARCHS. SWITCHBOARD_PORTABLE=1 drops
# -march=native, since the image runs on other CPUs than the one that built it.
# Stage 2 is the CUDA runtime image (cudart, cuBLAS) with Node 20, the built addon and the
# TypeScript sources (run by tsx), as a non-root user.
ARG CUDA_VERSION=12.6.3
ARG UBUNTU_VERSION=22.04
ARG NODE_IMAGE=node:20.19-bookworm-slim

FROM ${NODE_IMAGE} AS node

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build
ARG CUDA_ARCHITECTURES="80;90"
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/include/node /usr/local/include/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm && node --version && npm --version && nvcc --version
ENV SWITCHBOARD_CUDA_ARCHS=${CUDA_ARCHITECTURES} \
    CUDAARCHS=${CUDA_ARCHITECTURES} \
    SWITCHBOARD_PORTABLE=1
WORKDIR /app
# What `npm ci` needs to build the engine (its install script runs cmake-js), so source edits
# elsewhere do not rebuild it.
COPY package.json package-lock.json ./
COPY scripts/build-native.mjs scripts/
COPY native/CMakeLists.txt native/
COPY native/src native/src
COPY kernels kernels
RUN npm ci --omit=dev --no-audit --no-fund \
 && test -f native/build/Release/switchboard_native.node \
 && { test -f native/build/Release/switchboard_cuda.node || echo "warning: no CUDA engine built (CPU engine only)" >&2; } \
 && rm -rf native/build/CMakeFiles native/build/kernels
# The OpenTelemetry SDK, loaded by preload.mjs only when OTEL_EXPORTER_OTLP_ENDPOINT is set.
COPY infra/otel/package.json infra/otel/package-lock.json infra/otel/preload.mjs /opt/otel/
RUN npm ci --prefix /opt/otel --omit=dev --no-audit --no-fund
COPY bin bin
COPY protocol protocol
COPY backend backend
COPY native/*.ts native/
COPY infra/scripts/scrape-token.mjs infra/scripts/

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION}
LABEL org.opencontainers.image.title="switchboard-backend" \
      org.opencontainers.image.description="Multi-LoRA inference server (LoRAX- and OpenAI-compatible API)"
COPY --from=node /usr/local/bin/node /usr/local/bin/node
RUN groupadd --gid 10001 switchboard \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/switchboard --shell /usr/sbin/nologin switchboard \
 && mkdir -p /models /data/adapters /data/hub-cache \
 && chown -R 10001:10001 /data
COPY --from=build /opt/otel /opt/otel
COPY --from=build /app /app
WORKDIR /app
# Each option of `switchboard serve --help` is also an environment variable (MODEL_ID, PORT,
# MAX_TOTAL_TOKENS, ...). MODEL_ID has no default: mount the model under /models.
ENV NODE_ENV=production \
    PORT=8080 \
    ADAPTER_ROOT=/data/adapters \
    HUGGINGFACE_HUB_CACHE=/data/hub-cache \
    JSON_OUTPUT=true \
    OTEL_SERVICE_NAME=switchboard-backend
USER 10001:10001
EXPOSE 8080
VOLUME ["/data"]
# /health answers once the model is loaded and the server listens; loading a large model takes
# minutes, hence the long start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# --hostname is a flag on purpose: the HOSTNAME variable it would otherwise come from is the
# container's own name in Docker and Kubernetes.
ENTRYPOINT ["node", "--import", "/opt/otel/preload.mjs", "bin/switchboard.mjs", "serve", "--hostname", "0.0.0.0"]
