#!/bin/sh
# Coordinator container entrypoint.
#   start (default)  init the data dir on first start, then run the coordinator
#   fedlora ARGS...  run any fedlora command (e.g. `site invite`, `job submit`)
# Environment:
#   FEDLORA_DATA_DIR         data dir (default /data/coordinator)
#   FEDLORA_HOME             the code (default /opt/fedlora)
#   FEDLORA_SANS             extra server-certificate names, space separated (the names sites dial)
#   FEDLORA_PUBLIC_ENDPOINT  host:port sites dial for Federation (default: <first SAN>:7443)
#   FEDLORA_CONFIG_OVERRIDES a YAML file merged into coordinator.yaml at every start (ports,
#                            heartbeat, rounds, transfer, site_cert_days, log_level; never
#                            admin_tokens), e.g. the Helm chart's ConfigMap
set -eu
DATA_DIR="${FEDLORA_DATA_DIR:-/data/coordinator}"
HOME_DIR="${FEDLORA_HOME:-/opt/fedlora}"   # where the code is (tests point it at a checkout)
FEDLORA="node $HOME_DIR/cli/bin.mjs"
cmd="${1:-start}"
if [ "$cmd" = "fedlora" ]; then
  shift
  exec $FEDLORA "$@"
fi
if [ "$cmd" != "start" ]; then
  echo "usage: start | fedlora ARGS..." >&2
  exit 2
fi
if [ ! -f "$DATA_DIR/coordinator.yaml" ]; then
  first_san=""
  san_args=""
  for s in ${FEDLORA_SANS:-}; do
    [ -z "$first_san" ] && first_san="$s"
    san_args="$san_args $s"
  done
  endpoint="${FEDLORA_PUBLIC_ENDPOINT:-${first_san:-localhost}:7443}"
  if [ -n "$san_args" ]; then
    # shellcheck disable=SC2086
    $FEDLORA coordinator init --data-dir "$DATA_DIR" --public-endpoint "$endpoint" --san $san_args
  else
    $FEDLORA coordinator init --data-dir "$DATA_DIR" --public-endpoint "$endpoint"
  fi
  # inside a container the HTTP API must listen on all interfaces to be published
  node "$HOME_DIR/deploy/docker/config-set.mjs" "$DATA_DIR/coordinator.yaml" http.host 0.0.0.0
fi
if [ -n "${FEDLORA_CONFIG_OVERRIDES:-}" ] && [ -f "$FEDLORA_CONFIG_OVERRIDES" ]; then
  node "$HOME_DIR/deploy/docker/config-set.mjs" "$DATA_DIR/coordinator.yaml" --merge "$FEDLORA_CONFIG_OVERRIDES"
fi
exec $FEDLORA coordinator start --data-dir "$DATA_DIR"
