# mcp-authz-broker container image (docs/deploy.md).
#
#   docker build -t mcp-authz-broker:0.1.0 .
#   docker run --rm -p 127.0.0.1:8787:8787 mcp-authz-broker:0.1.0
#
# Three stages: OPA built from source at the version scripts/install-opa.sh pins, the broker
# built into a virtualenv with the pinned dependencies (constraints.txt), and a slim runtime
# that runs both as a non-root user. No container engine runs where this project is developed,
# so tests/unit/test_deploy.py lints this file (hadolint) and runs every RUN command's substance
# outside Docker: the same `go install`, the same `pip wheel`, the same install, the same healthcheck.

# ---- OPA: the real binary, from source, checksums verified against sum.golang.org ----------
# Go >= the `go` directive of OPA's go.mod (1.26.0 for OPA 1.22.0; the test checks it).
FROM golang:1.26-bookworm AS opa
# Keep equal to OPA_VERSION in scripts/install-opa.sh (the test checks it).
ARG OPA_VERSION=1.22.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN CGO_ENABLED=0 GOBIN=/out GOFLAGS=-trimpath \
        go install -ldflags='-s -w' "github.com/open-policy-agent/opa@v${OPA_VERSION}" \
    && /out/opa version | grep -qx "Version: ${OPA_VERSION}"

# ---- the broker: a wheel, installed with the pinned dependencies into /opt/venv -------------
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The pins first: the dependency layer is rebuilt only when they change.
COPY constraints.txt ./
COPY pyproject.toml README.md ./
COPY broker/ broker/
COPY schemas/ schemas/
# broker/schemas links to schemas/: the wheel ships them as package data.
# postgresql and redis: the scale-out stores (approvals, audit, rate-limit counters).
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && pip install --no-cache-dir -c constraints.txt \
        "mcp-authz-broker[postgres,redis] @ file://$(ls /wheels/mcp_authz_broker-*.whl)"

# ---- runtime ----------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="mcp-authz-broker" \
      org.opencontainers.image.description="Policy-driven authorization broker for the Model Context Protocol" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid/gid so Kubernetes' runAsNonRoot/runAsUser and volume ownership line up.
RUN groupadd --system --gid 10001 broker \
    && useradd --system --uid 10001 --gid broker --home-dir /var/lib/mcp-broker --shell /usr/sbin/nologin broker \
    && install -d -o broker -g broker -m 0750 /var/lib/mcp-broker /var/lib/mcp-broker/notes
COPY --from=opa /out/opa /usr/local/bin/opa
COPY --from=build /opt/venv /opt/venv
# Policies and the demo upstream baked in; mount over /etc/mcp-broker (or one file of it) to change them.
COPY policies/ /etc/mcp-broker/policies/
COPY deploy/compose/standalone.yaml /etc/mcp-broker/broker.yaml
COPY examples/notes_server.py examples/_serve.py /opt/mcp-broker/examples/
# HOME and XDG_STATE_HOME: the one writable place (approvals.db, audit/ by default; notes/ for
# the demo upstream of deploy/compose.yaml, so a named volume there starts owned by broker);
# /tmp (a tmpfs or emptyDir when the root is read-only): the managed OPA's socket and snapshots.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/var/lib/mcp-broker \
    XDG_STATE_HOME=/var/lib/mcp-broker \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MCP_BROKER_HEALTHCHECK_URL=http://127.0.0.1:8787/healthz
USER 10001:10001
WORKDIR /var/lib/mcp-broker
VOLUME ["/var/lib/mcp-broker"]
EXPOSE 8787
# No curl in a slim image: the venv's Python asks /healthz (liveness: the process serves HTTP).
# Compose overrides the URL with /readyz where a replica should only count once it can decide.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['MCP_BROKER_HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["mcp-broker"]
CMD ["serve", "-c", "/etc/mcp-broker/broker.yaml"]
