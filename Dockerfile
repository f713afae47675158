# syntax=docker/dockerfile:1
# The Vigil image: one image, every `vigil` command (ENTRYPOINT ["vigil"]).
# Used by docker-compose.yml (the multi-host path); `make run` needs no Docker.
#
#   docker build -t vigil:local .
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=broker:9092 vigil:local topics list
#
# Containers always talk to an external broker (KAFKA_BOOTSTRAP_SERVERS); the image has
# no Java, so `vigil kafka ...` and `vigil run` (the embedded local broker) are not for it.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: wheels for the dependencies (cached while pyproject.toml is unchanged), then Vigil
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
# All runtime dependencies are pinned in pyproject.toml; faust-streaming[rocksdict] ships
# manylinux wheels, so no compiler is needed.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip wheel --wheel-dir /wheels -r /tmp/requirements.txt
COPY schemas/ schemas/
COPY streams/ streams/
COPY services/ services/
# README.md is the package's long description (optional while it does not exist yet).
COPY pyproject.toml README.md* ./
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --no-deps --wheel-dir /wheels .

# ---- runtime: the installed package only (no source tree), as a non-root user
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="vigil" \
      org.opencontainers.image.description="Real-time early-warning monitor for multi-organ dysfunction in the ICU" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIGIL_DATA_DIR=/data
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels vigil \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/vigil vigil \
    && install -d -o vigil -g vigil -m 0750 /data
# The named volume mounted at /data inherits this directory's owner on first use.
VOLUME ["/data"]
USER vigil:vigil
WORKDIR /home/vigil
# Prometheus /metrics of `vigil worker` (VIGIL_METRICS_PORT; set VIGIL_METRICS_HOST=0.0.0.0).
EXPOSE 9108
ENTRYPOINT ["vigil"]
CMD ["--help"]
