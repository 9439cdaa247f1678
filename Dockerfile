# facemood service: FastAPI + uvicorn + ONNX Runtime, serving a model from a registry folder.
#
# Build (from the repository root):
#   docker build -t facemood-serve .
#   docker build --build-arg EXTRAS=serve,postgres,cloud -t facemood-serve .   # PostgreSQL log, gs:// and s3:// registries
# Run, with the registry of this checkout mounted read-only and the prediction log in a volume:
#   docker run --rm -p 8000:8000 -v "$PWD/registry:/registry:ro" -v facemood-data:/data facemood-serve
#   open http://localhost:8000/  (API docs: /docs, metrics: /metrics)
# API keys, made on the host with `FACEMOOD_API_KEYS_FILE=keys/api_keys.json facemood keys add NAME`: mount the folder, not
# the file, so that keys added or revoked on the host reach the running service:
#   docker run ... -v "$PWD/keys:/keys:ro" -e FACEMOOD_API_KEYS_FILE=/keys/api_keys.json facemood-serve
#   (without keys the service is open to anyone who reaches the port, and says so when it starts)
# Behind a reverse proxy in another container, let uvicorn take client addresses from it: -e FORWARDED_ALLOW_IPS=<proxy address>
# Options go after the image name (they are `facemood serve` options):
#   docker run ... facemood-serve --model fer2013:3 --workers 2
# Settings are environment variables:
#   -e FACEMOOD_REGISTRY_DIR=gs://bucket/models   (build with EXTRAS=serve,cloud for gs:// and s3://)
#   -e FACEMOOD_PREDICTION_LOG=postgresql+psycopg://user:pass@db/facemood   (build with EXTRAS=serve,postgres)
#   -e FACEMOOD_PREDICTION_LOG=off   -e FACEMOOD_LOG_RETENTION_DAYS=90   -e FACEMOOD_MAX_UPLOAD_MB=5
#   -e FACEMOOD_RATE_LIMIT=20   -e FACEMOOD_MAX_IN_FLIGHT=16   -e FACEMOOD_LOG_CROPS=true   -e FACEMOOD_CROP_RETENTION_DAYS=3
# `docker stop` sends SIGTERM: uvicorn finishes the requests in flight and the prediction log is flushed.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FACEMOOD_REGISTRY_DIR=/registry FACEMOOD_OUTPUTS_DIR=/data FACEMOOD_DATA_DIR=/data/datasets

WORKDIR /app
COPY pyproject.toml README.md ./
COPY facemood ./facemood
# The serving extra: ONNX Runtime, FastAPI, OpenCV; no torch (a model registered without ONNX needs the train extra).
# Expected image size: about 480 MB (python:3.11-slim, about 130 MB, plus the serving install, about 350 MB: see README).
ARG EXTRAS=serve
RUN pip install ".[${EXTRAS}]"

RUN useradd --create-home --uid 1000 facemood && mkdir -p /registry /data && chown facemood /data
USER facemood
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"
ENTRYPOINT ["facemood", "serve", "--host", "0.0.0.0", "--port", "8000"]
