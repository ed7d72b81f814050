# A stand-in for python:3.11-slim on a machine that reaches no image registry: Debian's
# Python 3.11 in a virtual environment that is first on PATH (`python`, `pip`), on a Debian
# base made with debootstrap (scripts/cluster-local.sh). Apt reaches the Debian mirror.
ARG DEBIAN_IMAGE=secateurs-local/debian:bookworm
FROM ${DEBIAN_IMAGE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/python
ENV PATH=/opt/python/bin:$PATH LANG=C.UTF-8
CMD ["python"]
