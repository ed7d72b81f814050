# Secateurs: one CPU image for the API, the Ray head and the Ray workers (docker-compose.yml).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 SECATEURS_DATA_DIR=/data
WORKDIR /app

# CPU torch first, on its own, from the PyTorch CPU index, so nothing pulls a CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY pruning ./pruning
COPY search ./search
COPY workers ./workers
COPY service ./service
RUN pip install . && mkdir -p /data

EXPOSE 8000 6379 8265
CMD ["secateurs", "serve", "--host", "0.0.0.0", "--port", "8000"]
