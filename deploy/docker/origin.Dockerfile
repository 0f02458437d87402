# The origin (API, workers, simulator). Build from the repository root:
#   docker build -f deploy/docker/origin.Dockerfile -t sluice-origin .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Registry and target caches survive between builds; the binary is copied out
# of the cache mount because the mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice-origin \
    && cp target/release/sluice-origin /usr/local/bin/sluice-origin

FROM debian:bookworm-slim
# curl only for the health check; CA certificates for HTTPS providers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/sluice --create-home sluice
COPY --from=build /usr/local/bin/sluice-origin /usr/local/bin/sluice-origin
USER 10001
WORKDIR /var/lib/sluice
# Public API, and the admin listener (metrics, probes, status page).
ENV SLUICE_SERVER__LISTEN=0.0.0.0:8081 \
    SLUICE_SERVER__ADMIN_LISTEN=0.0.0.0:8082 \
    SLUICE_DATABASE__URL=sqlite:///var/lib/sluice/sluice.db?mode=rwc \
    SLUICE_LOG_JSON=true
EXPOSE 8081 8082
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8082/health"]
# SIGTERM drains: no new connections, requests and running jobs finish.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sluice-origin"]
