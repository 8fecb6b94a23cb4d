# syntax=docker/dockerfile:1.7
#
# One image for the whole suite; its first argument selects what runs:
#
#   docker run portico signer        # portico-signer      (gRPC 50055)
#   docker run portico refdata       # portico-refdata     (gRPC 50051)
#   docker run portico marketdata    # portico-marketdata  (gRPC 50052)
#   docker run portico execution     # portico-execution   (gRPC 50053)
#   docker run portico account       # portico-account     (gRPC 50054)
#   docker run portico gateway       # portico-gateway     (HTTP 8080)
#   docker run portico sim --host 0.0.0.0   # `portico sim`, the Syndr simulator (HTTP + WS 8700)
#   docker run portico portico ...   # anything else runs as a command (e.g. `portico signer keys list-addresses`)
#
# Configuration is the PORTICO_* / OTEL_* environment (README, "Configuration"); the services bind
# 127.0.0.1 unless PORTICO_LISTEN_ADDR / PORTICO_GATEWAY_LISTEN_ADDR say otherwise (deploy/k8s sets 0.0.0.0).
# tests/integration/test_deploy.py checks this file against pyproject.toml, the Makefile and the services.

# Pinned to a Python patch release and a Debian release (the bare `python:3.11-slim` follows every new patch
# release and has changed Debian releases under the same name). Bump it deliberately; to pin the exact bytes as
# well, append the digest (`docker buildx imagetools inspect python:3.11.14-slim-bookworm`): @sha256:<index digest>.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------- build: the project into a virtual environment
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/portico
WORKDIR /src
# What setuptools needs to build the distribution (pyproject's packages.find: where = ["services"]).
# The generated gRPC code is committed, so nothing is generated here.
COPY pyproject.toml ./
COPY services ./services
# The Makefile's install (`pip install --upgrade pip`, then `pip install -e '.[dev]'`), as a regular
# install and without the dev extra: the image needs the runtime dependencies only (no test tools,
# no OpenBao binary, no grpcio-tools).
RUN /opt/portico/bin/pip install --quiet --upgrade pip \
 && /opt/portico/bin/pip install --quiet . \
 && /opt/portico/bin/python -m compileall -q /opt/portico/lib

# ---------------------------------------------------------------- runtime: the virtual environment and a dispatcher
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/portico/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 portico \
 && useradd --system --uid 10001 --gid portico --home-dir /var/lib/portico --create-home --shell /usr/sbin/nologin portico
COPY --from=build /opt/portico /opt/portico

# The service names are the console scripts of pyproject.toml without their `portico-` prefix, plus `sim`.
COPY --chmod=0755 <<'EOF' /usr/local/bin/portico-run
#!/bin/sh
# portico-run SERVICE [ARGS...]: run one Portico component in the foreground (exec: signals reach it directly).
set -eu
service="${1:-}"
case "$service" in
  signer|refdata|marketdata|execution|account|gateway)
    shift
    exec "portico-$service" "$@"
    ;;
  sim)
    shift
    exec portico sim "$@"
    ;;
  ""|-h|--help)
    echo "usage: portico-run signer|refdata|marketdata|execution|account|gateway|sim [ARGS...] | COMMAND [ARGS...]" >&2
    exit 64
    ;;
  *)
    exec "$@"
    ;;
esac
EOF

USER 10001:10001
WORKDIR /var/lib/portico
# gRPC: refdata, marketdata, execution, account, signer; HTTP: gateway; HTTP + WebSocket: the simulator.
EXPOSE 50051 50052 50053 50054 50055 8080 8700
ENTRYPOINT ["portico-run"]
CMD ["--help"]
