# syntax=docker/dockerfile:1
# quackgate: one image for every role (serve, edge, node, catalog), one executable (gateway and
# embedded DuckDB workers), selected by the container's args. Built remotely by `azd up` (ACR
# build, infra/aca/); not built in our CI (its machines run no Docker engine). scripts/check-infra
# lints it (hadolint, checkov).
#
# Runtime layout (the root filesystem may be read-only; these are the only paths written):
#   /tmp                    TMPDIR: each worker's private folder (its catalog secret) and spill
#                           files; mount an emptyDir / EmptyDir volume here
#   /var/lib/quackgate      the working directory; workers.database_dir, a local lake
#                           (data_path) or the catalog's file when configured below it
#   /run/secrets/quackgate  read-only: id secret, tokens, TLS, mounted by the platform
# Read: /etc/quackgate (configs: example.toml as quackgate.toml, and aca/*.toml, the Azure
# Container Apps roles), /opt/quackgate/extensions (DuckDB 1.5.5's quack, httpfs, parquet,
# ducklake, azure, icu; no extension is ever downloaded at run time).

FROM rust:1-bookworm AS build
# Build stage only (the runtime stage installs no package). Not pinned: bookworm's security
# archive replaces versions, so a pin would break the build; the build is reproducible
# through Cargo.lock and fetch-duckdb's pinned wheels, not through these tools.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# DuckDB 1.5.5 extensions from their PyPI wheels (no extension repository needed at run time).
RUN QUACKGATE_DUCKDB_HOME=/opt/duckdb scripts/fetch-duckdb
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked && cp target/release/quackgate /usr/local/bin/quackgate

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 quackgate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/quackgate --no-create-home quackgate \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/quackgate
COPY --from=build /usr/local/bin/quackgate /usr/local/bin/quackgate
COPY --from=build /opt/duckdb/ext /opt/quackgate/extensions
# The public roots, for DuckDB's HTTPS (the catalog's ingress, Azure Blob storage): the slim
# base has none, and installing ca-certificates here would need an unpinnable apt-get.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY config/example.toml /etc/quackgate/quackgate.toml
COPY infra/aca/config/ /etc/quackgate/aca/
ENV TMPDIR=/tmp HOME=/var/lib/quackgate
WORKDIR /var/lib/quackgate
USER 10001:10001
EXPOSE 8443 8080 9465 9500 9601
# /healthz on the admin port, which every config in this image puts on 127.0.0.1:9464 (the
# health listener on 9465 serves platform probes). Docker and
# `docker run` use it; Container Apps and Kubernetes ignore it and probe /healthz and /readyz
# themselves (infra/). No curl in the image: bash's /dev/tcp speaks the one request.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/quackgate"]
CMD ["serve", "--config", "/etc/quackgate/quackgate.toml"]
