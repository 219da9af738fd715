# jitgate container: multi-stage build, non-root runtime.
#   docker build -t jitgate .
#   docker run -v jitgate-certs:/var/lib/jitgate/certs -v jitgate-data:/var/lib/jitgate/data \
#              -v jitgate-rec:/var/lib/jitgate/recordings -p 8440:8440 -p 2222:2222 -p 8443:8443 jitgate
# Mount your own configuration over /etc/jitgate/ in production.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY vendor ./vendor
COPY src ./src
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
COPY config/ /etc/jitgate/
# The example configuration uses paths relative to its folder; point them at the volumes and
# listen on all interfaces inside the container.
RUN sed -i \
      -e 's|^data_dir = .*|data_dir = "/var/lib/jitgate/data"|' \
      -e 's|^certs_dir = .*|certs_dir = "/var/lib/jitgate/certs"|' \
      -e 's|^recordings_dir = .*|recordings_dir = "/var/lib/jitgate/recordings"|' \
      -e 's|^url = "sqlite://.*|url = "sqlite:///var/lib/jitgate/data/jitgate.db"|' \
      -e 's|^api_listen = .*|api_listen = "0.0.0.0:8440"|' \
      /etc/jitgate/jitgate.toml
USER jitgate
WORKDIR /var/lib/jitgate
VOLUME ["/var/lib/jitgate/certs", "/var/lib/jitgate/data", "/var/lib/jitgate/recordings"]
EXPOSE 8440 2222 8443
ENV JITGATE_CONFIG=/etc/jitgate/jitgate.toml
# init creates only missing keys, so restarts keep them.
CMD ["sh", "-c", "jitgate init >/dev/null && exec jitgate serve"]
