#!/bin/sh
# fluxion-entrypoint - starts fluxiond in the container on 0.0.0.0:7070
# (FLUXION_LISTEN), its HTTP port on 0.0.0.0:8000 (FLUXION_HTTP_LISTEN;
# "off": none; the HEALTHCHECK asks it) with /data, and with what is
# mounted:
#   /etc/fluxion/tls/tls.crt + tls.key   TLS (FLUXION_TLS_DIR to move it);
#   /etc/fluxion/tls/client-ca.crt       mTLS: verify client certificates;
#   /run/secrets/fluxion-admin-token     the first admin token
#                                        (--init-admin-token; or the env
#                                        FLUXIOND_ADMIN_TOKEN, read by fluxiond).
# Arguments after the image name go to fluxiond (e.g. --insecure for a
# plaintext test setup, --team-max-models 20). Without TLS files fluxiond
# refuses a non-loopback address and says how to fix it.
set -eu
tls_dir="${FLUXION_TLS_DIR:-/etc/fluxion/tls}"
secret="${FLUXION_ADMIN_TOKEN_FILE:-/run/secrets/fluxion-admin-token}"

set -- --listen "${FLUXION_LISTEN:-0.0.0.0:7070}" --data-dir /data "$@"
if [ "${FLUXION_HTTP_LISTEN:-}" != off ]; then
    set -- --http-listen "${FLUXION_HTTP_LISTEN:-0.0.0.0:8000}" "$@"
fi
if [ -f "$tls_dir/tls.crt" ] || [ -f "$tls_dir/tls.key" ]; then
    set -- "$@" --tls-cert "$tls_dir/tls.crt" --tls-key "$tls_dir/tls.key"
    if [ -f "$tls_dir/client-ca.crt" ]; then
        set -- "$@" --tls-client-ca "$tls_dir/client-ca.crt"
    fi
fi
# Only an existing secret: a missing one would make fluxiond write a new
# token there, and /run/secrets is read-only.
if [ -f "$secret" ]; then
    set -- "$@" --init-admin-token "$secret"
fi
exec fluxiond "$@"
