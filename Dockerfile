# HyprBox server image: build the release binary, then run it on a slim Debian.
#   docker build -t hyprbox .
#   docker run -p 7860:7860 -v hyprbox-data:/data -e SECRET_KEY="$(openssl rand -hex 32)" hyprbox
# Listens on all interfaces on $PORT (7860, the Hyperion deployment's port); data in /data.
# Production by default (it listens on every interface): SECRET_KEY is required, registration is
# closed, heartbeats need a node token, cookies are Secure and the API docs are off. The first ADMIN:
#   docker exec -it <container> hyprbox users create-admin --email you@example.com

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hyprbox \
 && cp target/release/hyprbox /hyprbox

FROM debian:bookworm-slim
# curl for the health check; ca-certificates for SMTP and Postgres over TLS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /data --create-home hyprbox
COPY --from=build /hyprbox /usr/local/bin/hyprbox
USER hyprbox
WORKDIR /data
# PORT replaces the port of HYPRBOX_BIND, so `-e PORT=8000` moves it and it stays on all interfaces.
ENV HYPRBOX_ENV=production \
    HYPRBOX_BIND=0.0.0.0:7860 \
    PORT=7860 \
    HYPRBOX_DATA_DIR=/data \
    RUST_LOG=info
VOLUME ["/data"]
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/health" || exit 1
ENTRYPOINT ["hyprbox"]
CMD ["serve"]
