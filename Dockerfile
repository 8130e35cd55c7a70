# HELIOS binaries in a small runtime image (deploy/compose.yaml runs them together).
#
#   docker build -t helios .
#   docker run -p 8080:8080 -v helios-data:/var/lib/helios/data \
#       -e HELIOS_ADMIN_PASSWORD=... helios
#
# The image's default command is the gateway; the same image runs helios-worker,
# helios-proxy and helios-atlasd (override the entrypoint, as compose.yaml does).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# --locked: the versions of Cargo.lock, checked in CI.
RUN cargo build --release --locked -p helios-bins --bins \
    && mkdir -p /out \
    && cp target/release/helios-gateway target/release/helios-worker \
          target/release/helios-proxy target/release/helios-atlasd target/release/helios /out/

FROM debian:bookworm-slim
# A fixed non-root user owns the data; no shell login.
RUN groupadd --system --gid 10001 helios \
    && useradd --system --uid 10001 --gid helios --home-dir /var/lib/helios \
       --shell /usr/sbin/nologin helios \
    && mkdir -p /var/lib/helios/data \
    && chown -R helios:helios /var/lib/helios \
    && chmod 700 /var/lib/helios/data
COPY --from=build /out/ /usr/local/bin/
COPY configs/ /etc/helios/
USER helios:helios
WORKDIR /var/lib/helios
VOLUME ["/var/lib/helios/data"]
# The gateway's API and its open metrics listener (Prometheus scrapes it); the data
# directory (ATLAS, gateway.secret, admin-password, the audit log) is the volume.
ENV HELIOS_LISTEN=0.0.0.0:8080 \
    HELIOS_METRICS_LISTEN=0.0.0.0:9090 \
    HELIOS_DATA_DIR=/var/lib/helios/data \
    HELIOS_BACKUP_DIR=/var/lib/helios/backups \
    HELIOS_LOG__FORMAT=json
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["helios", "health", "http://127.0.0.1:8080/healthz"]
# Exec form: the binary is PID 1 and gets SIGTERM itself (it drains and fsyncs, then
# exits 0). STOPSIGNAL is Docker's default, named for the reader.
STOPSIGNAL SIGTERM
ENTRYPOINT ["helios-gateway"]
CMD ["--config", "/etc/helios/default.yaml"]
