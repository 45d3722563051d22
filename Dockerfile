# Builds the timelines-sync binary; used by docker-compose.yml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/timelines-sync /usr/local/bin/timelines-sync
COPY config/timelines-sync.example.toml /etc/timelines-sync/timelines-sync.example.toml
USER nobody
ENTRYPOINT ["timelines-sync"]
CMD ["run"]
