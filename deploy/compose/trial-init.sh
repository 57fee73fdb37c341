#!/bin/sh
# One-shot preparation of one trial hospital (run by the enroll-* services of
# docker-compose.yml, inside the site image, with the site's volume at /data and the
# coordinator's at /coordinator):
#   1. the base model: a tiny DeepSeek-architecture-compatible model, the same seed for every
#      site (a real deployment copies the consortium's Hugging Face folder to /data/model)
#   2. synthetic records for site number N, ingested and de-identified into /data/site/site.sqlite
#   3. a join token from the coordinator's data dir, then `site enroll` against coordinator:7444
#   4. site.yaml; and (first site only) /coordinator/trial-job.yaml with the model's manifest hash
# Idempotent: a site dir that is already enrolled is left alone.
# usage: trial-init.sh SITE_ID N
set -eu
SITE="$1"
N="$2"
FEDLORA="node /opt/fedlora/cli/bin.mjs"
COORD=/coordinator/coordinator
SITE_DIR=/data/site
mkdir -p "$SITE_DIR" /data/cache

if [ -f "$SITE_DIR/site.crt" ]; then
  echo "$SITE: already enrolled"
  exit 0
fi

[ -f /data/model/config.json ] || $FEDLORA model init-tiny --arch qwen2 --out /data/model --seed 7 --layers 2 --hidden 64

cat > "$SITE_DIR/site.yaml" <<YAML
name: $SITE (trial)
model:
  path: /data/model
  device: cpu
policy:
  min_sites_per_aggregation: 2
  require_dp: false
  # the tiny model's byte-level tokenizer makes long prompts: leave out the long history field
  allowed_fields: [department, chiefComplaint, exam, labs, diagnosis, treatment]
training:
  local_baseline: true
  max_seq_len: 768
YAML

$FEDLORA synth --sites 3 --records 60 --lang en --format csv --seed 42 --out /tmp/records
$FEDLORA site ingest --site-dir "$SITE_DIR" --format csv "/tmp/records/site-$N/records.csv"

TOKEN=$($FEDLORA site invite --site "$SITE" --ttl 1h --data-dir "$COORD" --enroll-endpoint coordinator:7444)
$FEDLORA site enroll --site-dir "$SITE_DIR" --token "$TOKEN"

if [ "$N" = "1" ] && [ ! -f /coordinator/trial-job.yaml ]; then
  SHA=$($FEDLORA doctor --site-dir "$SITE_DIR" --json | node -e '
    let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      const m = JSON.parse(s).checks.find((c) => c.name === "model");
      process.stdout.write((/manifest sha256 ([0-9a-f]{64})/.exec(m.detail) || [])[1] || "");
    });') || true
  [ -n "$SHA" ] || { echo "could not read the model manifest sha256" >&2; exit 1; }
  cp /data/model/config.json /coordinator/trial-model-config.json
  cat > /coordinator/trial-job.yaml <<YAML
name: three-hospital trial
base_model:
  id: fedlora/tiny-qwen2-trial
  manifest_sha256: $SHA
  config_path: trial-model-config.json
lora:
  r: 4
  alpha: 8
  target_modules: [q_proj, v_proj]
rounds: 3
train:
  local_steps: 4
  learning_rate: 0.001
min_sites: 2
max_sites: 3
round_deadline_s: 600
YAML
fi
$FEDLORA site status --site-dir "$SITE_DIR"
