# The image of Factory's code location: the gRPC code server, the run workers and every step pod.
# Build from the repository root:
#   docker build -f deploy/code-location.Dockerfile -t registry.example.com/factory/code-location:0.1.0 .
# Build it for both arches (one `docker build --platform` each, then `docker manifest`): step
# pods of the arm64 pool run it on arm64 nodes.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# Builds run through the Docker CLI with BuildKit (Debian's 20.10 client); the engine itself is
# the per-node DaemonSet (deploy/k8s/docker-engine.yaml), reached through DOCKER_HOST.
RUN apt-get update \
    && apt-get install -y --no-install-recommends docker.io ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/factory
COPY pyproject.toml README.md workspace.yaml dagster.yaml ./
COPY factory ./factory
COPY factory_assets ./factory_assets
COPY resources ./resources
COPY sensors ./sensors
COPY control_plane ./control_plane
# Editable, so the embedded defaults (the example manifest store under control_plane/) resolve
# inside /opt/factory as they do in a checkout.
RUN pip install --no-cache-dir -e .

ENV DAGSTER_HOME=/opt/dagster/dagster_home
