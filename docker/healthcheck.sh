#!/bin/sh
# fluxion-healthcheck - the image's HEALTHCHECK: GET /v2/health/ready on
# fluxiond's HTTP port (200 when ready, 503 while starting or draining).
# The image has no gRPC health client (grpc-health-probe is a separate
# download; the fluxion CLI has no health command), so it asks the HTTP
# port the entrypoint opens. With TLS it is HTTPS on the loopback address;
# -k because the certificate names the host clients use, not 127.0.0.1,
# and this is the container asking itself. With the HTTP port off
# (FLUXION_HTTP_LISTEN=off) all it can check is that the gRPC port accepts
# connections.
set -eu
tls_dir="${FLUXION_TLS_DIR:-/etc/fluxion/tls}"
http="${FLUXION_HTTP_LISTEN:-0.0.0.0:8000}"
if [ "$http" = off ]; then
    port="${FLUXION_LISTEN:-0.0.0.0:7070}"
    exec bash -c "exec 3<>/dev/tcp/127.0.0.1/${port##*:}"
fi
scheme=http
if [ -f "$tls_dir/tls.crt" ]; then scheme=https; fi
exec curl --silent --show-error --fail --insecure --max-time 4 --output /dev/null \
    "$scheme://127.0.0.1:${http##*:}/v2/health/ready"
