// deploy/README.md stays true: every `fedlora ...` command in its shell blocks exists with the
// options it uses (checked against the real command tree), the annotated site.yaml is valid
// for the real schema (site-agent/config.ts, strict), and so are the job specs it shows.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { DEPLOY, checkInvocation } from './helpers.ts';
import { parseSiteConfig } from '../../site-agent/config.ts';
import { parseJobSpec } from '../../coordinator/jobs/spec.ts';

const README = readFileSync(join(DEPLOY, 'README.md'), 'utf8');
const blocks = (lang: string) => [...README.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]);

/** fedlora invocations of the README's sh blocks (heredoc bodies skipped, continuations joined). */
function readmeCommands(): { line: string; args: string[] }[] {
  const out: { line: string; args: string[] }[] = [];
  for (const b of blocks('sh')) {
    const joined = b.replace(/\\\n\s*/g, ' ');
    let heredoc: string | null = null;
    for (const raw of joined.split('\n')) {
      if (heredoc) {
        if (raw.trim() === heredoc) heredoc = null;
        continue;
      }
      const h = /<<'?(\w+)'?/.exec(raw);
      if (h) heredoc = h[1];
      if (/^\s*#/.test(raw) || raw.includes('[--')) continue;
      const line = raw
        .replace(/#.*$/, '')
        .replace(/sudo -u fedlora /g, '')
        .replace(/"\$\([^)]*\)"/g, 'X')
        .replace(/<[^>]*>/g, 'X');
      for (const m of line.matchAll(/(?:^|[\s(])fedlora\s+([a-z][^|;&>)`]*)/g)) {
        const args = [...m[1].trim().matchAll(/"[^"]*"|'[^']*'|\S+/g)].map((w) => w[0].replace(/^['"]|['"]$/g, ''));
        out.push({ line: raw.trim(), args });
      }
    }
  }
  return out;
}

describe('deploy/README.md', () => {
  it('every fedlora command it shows exists, with those options and arguments', async () => {
    const cmds = readmeCommands();
    expect(cmds.length).toBeGreaterThan(30);
    // the guide covers the whole life cycle
    const shown = new Set(cmds.map((c) => c.args.slice(0, 2).join(' ')));
    for (const c of ['coordinator init', 'coordinator start', 'site invite', 'site enroll', 'site ingest', 'site start', 'site status', 'site revoke', 'job submit', 'job status', 'adapter download', 'model init-tiny', 'synth --sites', 'doctor --site-dir', 'doctor --data-dir']) {
      expect(shown.has(c), c).toBe(true);
    }
    const problems: string[] = [];
    for (const c of cmds) {
      const p = await checkInvocation(c.args, `README: ${c.line}`);
      if (p) problems.push(p);
    }
    expect(problems).toEqual([]);
  });

  it('the annotated site.yaml is valid for the real (strict) schema and shows every top-level section', () => {
    const example = blocks('yaml').find((b) => b.includes('model:') && b.includes('policy:') && b.includes('network:'))!;
    expect(example).toBeTruthy();
    const raw = YAML.parse(example);
    const cfg = parseSiteConfig(raw, 'README site.yaml');
    expect(cfg.policy.require_secure_aggregation).toBe(true);
    expect(Object.keys(raw).sort()).toEqual(['data', 'database', 'evaluation', 'evaluator', 'http', 'model', 'name', 'network', 'policy', 'serve', 'trainer', 'training']);
  });

  it('the site.yaml written in "two machines" and the job specs are valid', () => {
    const twoMachines = README.slice(README.indexOf('## Two machines'));
    const heredocs = [...twoMachines.matchAll(/<<YAML\n([\s\S]*?)\nYAML\n/g)].map((m) => m[1].replace(/\$s/g, 'a').replace(/\$SHA/g, 'cd'.repeat(32)));
    expect(heredocs.length).toBe(2);
    expect(parseSiteConfig(YAML.parse(heredocs[0]), 'two-machines site.yaml').training.max_seq_len).toBe(768);
    expect(parseJobSpec(YAML.parse(heredocs[1]), 'two-machines job.yaml').min_sites).toBe(2);
    const opSpec = blocks('yaml').find((b) => b.includes('base_model:') && b.includes('privacy:'))!;
    expect(parseJobSpec(YAML.parse(opSpec.replace('<64 hex>', 'ef'.repeat(32))), 'operator job.yaml').privacy.secure_aggregation).toBe(true);
  });
});
