# Secateurs: one CPU image for the API, the Ray head and the Ray workers (docker-compose.yml).
# Build arguments (defaults: the official Python image and the public package indexes):
#   BASE_IMAGE       an image with Python 3.11 and pip on PATH
#   PIP_INDEX_URL    where pip finds the project's dependencies (a mirror or a local index)
#   TORCH_INDEX_URL  where pip finds the CPU build of torch
# scripts/cluster-local.sh builds with a Debian base made by debootstrap and a local index
# (a machine that reaches no image registry): see docs/cluster.md.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG PIP_INDEX_URL=https://pypi.org/simple
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 SECATEURS_DATA_DIR=/data
WORKDIR /app

# CPU torch first, on its own, from the CPU index, so nothing pulls a CUDA build.
RUN pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"

# The dependencies (pyproject's list) in a layer of their own, then the project without them:
# an edit to the code rebuilds only the last layers. pip reads PIP_INDEX_URL (a build argument).
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
    > /tmp/requirements.txt && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY README.md ./
COPY pruning ./pruning
COPY search ./search
COPY workers ./workers
COPY service ./service
COPY secateurs ./secateurs
RUN pip install --no-deps . && mkdir -p /data

EXPOSE 8000 6379 8265
CMD ["secateurs", "serve", "--host", "0.0.0.0", "--port", "8000"]
