// `fedlora demo`'s option defaults are the demo's own settings (cli/demo/options.ts): the command
// tree's options, read in-process from cli/main.ts's buildProgram, against DEMO_DEFAULTS, so the
// numbers `--help` shows are the ones a run without options uses.
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../cli/main.ts';
import { DEMO_DEFAULTS } from '../../cli/demo/run-demo.ts';

const demo = buildProgram().commands.find((c) => c.name() === 'demo')!;
const optionDefault = (attribute: string) => {
  const o = demo.options.find((x) => x.attributeName() === attribute);
  if (!o) throw new Error(`fedlora demo has no option for ${attribute}`);
  return o.defaultValue;
};

describe('fedlora demo option defaults', () => {
  it('show DEMO_DEFAULTS for every setting they share', () => {
    const valued = ['sites', 'rounds', 'records', 'localSteps', 'learningRate', 'seed', 'arch', 'lang', 'skew', 'aggregation', 'personalSteps'] as const;
    for (const k of valued) expect([k, optionDefault(k)]).toEqual([k, String(DEMO_DEFAULTS[k])]);
    expect(optionDefault('smallSite')).toBe(String(DEMO_DEFAULTS.smallSite ?? 0));
    expect(optionDefault('sharedPerDiagnosis')).toBe(String(DEMO_DEFAULTS.sharedPerDiagnosis ?? 0));
    for (const k of ['freezeA', 'secureAggregation', 'keepRunning'] as const) expect([k, optionDefault(k)]).toEqual([k, DEMO_DEFAULTS[k]]);
    expect(optionDefault('dp')).toBe(DEMO_DEFAULTS.dp !== null);
  });

  it('print them in --help', () => {
    const help = demo.helpInformation().replace(/\s+/g, ' ');
    expect(help).toContain(`synthetic records per hospital (default: "${DEMO_DEFAULTS.records}")`);
    expect(help).toContain(`local learning rate (default: "${DEMO_DEFAULTS.learningRate}")`);
    expect(help).toContain(`federated rounds (default: "${DEMO_DEFAULTS.rounds}")`);
  });
});
