#!/bin/sh
# Starts kiln-serve the way the platform expects: 0.0.0.0:8080, package at /home/mind/model.
# KILN_PROTOCOL=https (default, the platform's default) uses KILN_TLS_CERT/KILN_TLS_KEY when
# both are set, else a self-signed certificate; KILN_PROTOCOL=http serves plain HTTP.
# Extra flags go in KILN_SERVE_ARGS (e.g. "--max-batch 64 --device cuda").
set -e
MODEL_DIR="${KILN_MODEL_DIR:-/home/mind/model}"
TLS=""
if [ "${KILN_PROTOCOL:-https}" = "https" ]; then
  if [ -n "${KILN_TLS_CERT:-}" ] && [ -n "${KILN_TLS_KEY:-}" ]; then
    TLS="--tls-cert $KILN_TLS_CERT --tls-key $KILN_TLS_KEY"
  else
    TLS="--tls-self-signed"
  fi
fi
# shellcheck disable=SC2086
exec kiln-serve --model-dir "$MODEL_DIR" --host 0.0.0.0 --port 8080 $TLS ${KILN_SERVE_ARGS:-}
