# syntax=docker/dockerfile:1
# quackgate: one image, one executable (gateway and embedded DuckDB workers).
# Not built in our CI (its machines run no Docker engine); the same steps run in scripts/test.

FROM rust:1-bookworm AS build
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
RUN useradd --system --uid 10001 quackgate
COPY --from=build /usr/local/bin/quackgate /usr/local/bin/quackgate
COPY --from=build /opt/duckdb/ext /opt/quackgate/extensions
COPY config/example.toml /etc/quackgate/quackgate.toml
USER quackgate
EXPOSE 8443 9464
ENTRYPOINT ["/usr/local/bin/quackgate"]
CMD ["serve", "--config", "/etc/quackgate/quackgate.toml"]
