#!/bin/sh
# The three-hospital trial on one Docker host, end to end:
#   build images → start the coordinator (creates the CA on first start) → prepare and enroll
#   hospital-a/b/c (one-shot jobs) → start the three agents → submit a 3-round job → watch it.
# usage: deploy/compose/trial.sh [up|status|down]
set -eu
cd "$(dirname "$0")"
DC="docker compose -f docker-compose.yml"
case "${1:-up}" in
  up)
    $DC build
    $DC up -d --wait coordinator
    $DC up enroll-hospital-a
    $DC up enroll-hospital-b enroll-hospital-c
    $DC up -d hospital-a hospital-b hospital-c
    # the admin token and HTTP port come from the coordinator's data dir (--data-dir)
    $DC exec coordinator /bin/sh /opt/fedlora/deploy/docker/coordinator-entrypoint.sh fedlora \
      job submit /data/trial-job.yaml --id trial --data-dir /data/coordinator
    echo "dashboard: http://127.0.0.1:8080/dashboard/   status: $0 status"
    ;;
  status)
    $DC ps
    $DC exec coordinator /bin/sh /opt/fedlora/deploy/docker/coordinator-entrypoint.sh fedlora job status trial --data-dir /data/coordinator
    for s in hospital-a hospital-b hospital-c; do
      $DC exec "$s" node /opt/fedlora/cli/bin.mjs doctor --site-dir /data/site --coordinator-url http://coordinator:8080 || true
    done
    ;;
  down)
    $DC down --volumes
    ;;
  *)
    echo "usage: $0 [up|status|down]" >&2
    exit 2
    ;;
esac
