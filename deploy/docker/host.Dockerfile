# The edge on Sluice's own wasmtime host (for Spin / SpinKube, deploy the same
# components with `spin registry push`). Build from the repository root:
#   docker build -f deploy/docker/host.Dockerfile -t sluice-host .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The wasm target comes from rustup (`cargo xtask edge` takes it when installed);
# where rustup cannot download, `--build-arg WASM_TARGET=debian` leaves it to
# xtask's fallback, which builds std for it from Debian's rust-web-src.
ARG WASM_TARGET=rustup
RUN if [ "$WASM_TARGET" = rustup ]; then rustup target add wasm32-wasip1; fi
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo xtask edge \
    && cargo build --release --locked -p sluice-host \
    && mkdir -p /out/target/wasm \
    && cp target/release/sluice-host /usr/local/bin/sluice-host \
    && cp target/wasm/*.wasm /out/target/wasm/ \
    && cp spin.toml /out/spin.toml

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app sluice
COPY --from=build /usr/local/bin/sluice-host /usr/local/bin/sluice-host
# spin.toml names the components as target/wasm/*.wasm, relative to itself.
COPY --from=build /out /app
# The components compiled into the image, so a container starts in well under
# a second instead of compiling them (docs/runtime-host.md). The cache belongs
# to the user that runs the host (sluice-host refuses one others may write).
# Compiled for this build machine's CPU: on a host whose CPU differs, the
# entries do not match and the start compiles, as without them.
ENV SLUICE_HOST_COMPILE_CACHE=/app/compiled
RUN install -d -o 10001 -m 0700 /app/compiled
USER 10001
RUN sluice-host compile --from /app/spin.toml
WORKDIR /app
ENV SLUICE_HOST_LISTEN=0.0.0.0:3000 \
    SLUICE_HOST_ADMIN_LISTEN=0.0.0.0:3001 \
    SLUICE_LOG_JSON=true
EXPOSE 3000 3001
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:3001/health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["sluice-host"]
CMD ["up", "--from", "/app/spin.toml"]
