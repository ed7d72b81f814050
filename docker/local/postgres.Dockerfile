# A stand-in for postgres:15 on a machine that reaches no image registry: Debian's
# PostgreSQL 15 on the debootstrap base, with the official image's interface as far as
# docker-compose.yml uses it: POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB create the
# role and database on first start, data in /var/lib/postgresql/data, pg_isready on PATH.
ARG DEBIAN_IMAGE=secateurs-local/debian:bookworm
FROM ${DEBIAN_IMAGE}

RUN mkdir -p /etc/postgresql-common \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown postgres:postgres /var/lib/postgresql/data /var/run/postgresql \
    && chmod 700 /var/lib/postgresql/data
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
