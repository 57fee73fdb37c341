// Set one field of a YAML config file in place: node config-set.mjs FILE a.b.c VALUE
// (VALUE is parsed as YAML: 0.0.0.0 stays a string, 8080 becomes a number). Used by the
// coordinator image's entrypoint to bind the HTTP API on all interfaces inside the container.
import { readFileSync, writeFileSync } from 'node:fs';
import YAML from 'yaml';

const [file, path, value] = process.argv.slice(2);
if (!file || !path || value === undefined) {
  process.stderr.write('usage: node config-set.mjs FILE dotted.path VALUE\n');
  process.exit(2);
}
const doc = YAML.parseDocument(readFileSync(file, 'utf8'));
doc.setIn(path.split('.'), YAML.parse(value));
writeFileSync(file, doc.toString(), { mode: 0o600 });
