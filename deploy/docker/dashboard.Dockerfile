# syntax=docker/dockerfile:1
# The llmproxy dashboard (Streamlit, `python -m ui`). It binds 0.0.0.0 only with SECRET_KEY set (signed
# access tokens); without it `python -m ui` refuses to start off loopback.
#
#   docker build -f deploy/docker/dashboard.Dockerfile -t llmproxy-dashboard:0.1.0 .   (from the repo root)
#
# Same locked, hash-checked install as deploy/docker/sidecar.Dockerfile (torch: see there).

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
RUN pip install --no-cache-dir --no-deps --no-build-isolation --no-index /src

FROM python:3.11.7-slim-bookworm
LABEL org.opencontainers.image.title="llmproxy-dashboard" \
      org.opencontainers.image.description="llmproxy Streamlit dashboard" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 llmproxy \
 && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin llmproxy
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 8501
HEALTHCHECK --interval=20s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status != 200)"]
ENTRYPOINT ["python", "-m", "ui"]
CMD ["--host", "0.0.0.0", "--port", "8501"]
