# Multi-stage build: cargo-chef caches dependencies, a slim runtime runs as non-root.
# Build: docker build -t postback-gateway .
# Run:   docker run -p 8080:8080 -v pbg-data:/app/data postback-gateway
FROM rust:1-slim-bookworm AS chef
RUN cargo install cargo-chef --locked
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin postback-gateway

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin pbg \
    && mkdir -p /app/data && chown -R pbg:pbg /app
WORKDIR /app
COPY --from=builder /app/target/release/postback-gateway /usr/local/bin/postback-gateway
USER pbg
# Inside a container the server must listen on all interfaces.
ENV LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
VOLUME ["/app/data"]
ENTRYPOINT ["/usr/local/bin/postback-gateway"]
CMD ["serve"]
