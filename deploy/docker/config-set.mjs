// Edit a YAML config file in place (used by the coordinator image's entrypoint):
//   node config-set.mjs FILE a.b.c VALUE        set one field (VALUE parsed as YAML: 0.0.0.0
//                                               stays a string, 8080 becomes a number)
//   node config-set.mjs FILE --merge OVERRIDES  deep-merge a YAML mapping (e.g. a Kubernetes
//                                               ConfigMap) into FILE; admin_tokens are never
//                                               taken from it (they stay as `coordinator init` wrote them)
import { readFileSync, writeFileSync } from 'node:fs';
import YAML from 'yaml';

const [file, a, b] = process.argv.slice(2);
if (!file || !a || b === undefined) {
  process.stderr.write('usage: node config-set.mjs FILE dotted.path VALUE | node config-set.mjs FILE --merge OVERRIDES.yaml\n');
  process.exit(2);
}
const doc = YAML.parseDocument(readFileSync(file, 'utf8'));
const isMap = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
function merge(path, v) {
  if (isMap(v)) for (const [k, x] of Object.entries(v)) merge([...path, k], x);
  else doc.setIn(path, v);
}
if (a === '--merge') {
  const over = YAML.parse(readFileSync(b, 'utf8')) ?? {};
  if (!isMap(over)) {
    process.stderr.write(`${b}: expected a YAML mapping\n`);
    process.exit(2);
  }
  delete over.admin_tokens;
  merge([], over);
} else doc.setIn(a.split('.'), YAML.parse(b));
writeFileSync(file, doc.toString(), { mode: 0o600 });
