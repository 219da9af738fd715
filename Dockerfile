# jitgate container: multi-stage build, non-root runtime.
#   docker build -t jitgate .
#   docker run -v jitgate-certs:/var/lib/jitgate/certs -v jitgate-data:/var/lib/jitgate/data \
#              -v jitgate-rec:/var/lib/jitgate/recordings -p 8440:8440 -p 2222:2222 -p 8443:8443 jitgate
# Mount your own configuration at /etc/jitgate/jitgate.toml; without one, the first start writes
# one with a fresh admin API key into the data volume and prints that key once.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY vendor ./vendor
COPY src ./src
# The console embeds the player built from web/package-lock.json (committed in web/dist/).
COPY web/dist ./web/dist
COPY tests ./tests
RUN cargo build --profile dist --locked --bin jitgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/jitgate --shell /usr/sbin/nologin jitgate \
 && mkdir -p /etc/jitgate /var/lib/jitgate/certs /var/lib/jitgate/data /var/lib/jitgate/recordings \
 && chown -R jitgate:jitgate /var/lib/jitgate \
 && chmod 0700 /var/lib/jitgate/certs
COPY --from=build /src/target/dist/jitgate /usr/local/bin/jitgate
# The example configuration is documentation only: its API keys are published. Without a
# configuration mounted at /etc/jitgate/jitgate.toml, the first start writes one with a fresh
# admin key into the data volume and shows the key once (scripts/container-start.sh).
COPY config/ /usr/share/jitgate/
COPY scripts/container-start.sh /usr/local/bin/jitgate-container-start
USER jitgate
WORKDIR /var/lib/jitgate
VOLUME ["/var/lib/jitgate/certs", "/var/lib/jitgate/data", "/var/lib/jitgate/recordings"]
EXPOSE 8440 2222 8443
ENV JITGATE_CONFIG=/etc/jitgate/jitgate.toml
CMD ["/usr/local/bin/jitgate-container-start"]
