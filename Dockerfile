# syntax=docker/dockerfile:1
# The timelines-sync image; docker-compose.yml builds it. Two stages: the build (toolchain,
# caches) and a slim runtime with the binary, CA certificates and curl (for the healthcheck),
# run as an unprivileged user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and compiled dependencies between builds (BuildKit); the
# binary is copied out of the cached target directory so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin timelines-sync \
 && cp target/release/timelines-sync /usr/local/bin/timelines-sync

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 timelines \
 && useradd --system --uid 10001 --gid timelines --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin timelines
COPY --from=build /usr/local/bin/timelines-sync /usr/local/bin/timelines-sync
# The service reads config/timelines-sync.toml relative to its working directory when it exists
# (mount ./config here), else its built-in defaults; environment variables override both.
WORKDIR /app
COPY config/timelines-sync.example.toml /app/config/timelines-sync.example.toml
# Inside a container the listener must face the container's network, not its loopback.
ENV TIMELINES_SYNC_HTTP_LISTEN=0.0.0.0:8080 \
    RUST_LOG=info
EXPOSE 8080
USER timelines:timelines
# Ready: the database answers and has exactly this binary's migrations.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/readyz"]
# Exec form: the service is PID 1 and gets SIGTERM itself (stop claiming, drain, exit).
ENTRYPOINT ["timelines-sync"]
CMD ["run"]
