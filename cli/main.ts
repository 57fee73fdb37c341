// The `fedlora` command tree. Each area registers its subcommands in its own file under
// cli/commands/; this file only creates the shared groups and turns errors into exit codes.
import { Command } from 'commander';
import { isFedloraError } from '../shared/errors.ts';
import type { CliGroups } from './groups.ts';
import * as modelCmds from './commands/model.ts';
import * as dataCmds from './commands/data.ts';
import * as deidCmds from './commands/deid.ts';
import * as privacyCmds from './commands/privacy.ts';
import * as pkiCmds from './commands/pki.ts';
import * as federationCmds from './commands/federation.ts';
import * as demoCmds from './commands/demo.ts';
import * as siteAgentCmds from './commands/site-agent.ts';
import * as opsCmds from './commands/ops.ts';
import * as researcherCmds from './commands/researcher.ts';
import * as auditCmds from './commands/audit.ts';
import * as serveCmds from './commands/serve.ts';
import * as gateCmds from './commands/gate.ts';
import * as apiTokenCmds from './commands/api-tokens.ts';
import * as dbAtRestCmds from './commands/db-at-rest.ts';
import * as examCmds from './commands/exam.ts';
import * as reviewCmds from './commands/review.ts';
import * as distillCmds from './commands/distill.ts';

export function buildProgram(): Command {
  const program = new Command('fedlora')
    .description('Federated LoRA fine-tuning of DeepSeek models across hospitals')
    .showHelpAfterError();
  const groups: CliGroups = {
    program,
    model: program.command('model').description('base models: tiny test models, scoring'),
    site: program.command('site').description('site agent: enrollment, data, running'),
    coordinator: program.command('coordinator').description('the consortium coordinator service'),
    ca: program.command('ca').description("the consortium's certificate authority"),
    job: program.command('job').description('training jobs'),
    adapter: program.command('adapter').description('published adapter versions'),
    privacy: program.command('privacy').description('differential-privacy accounting'),
    audit: program.command('audit').description('tamper-evident audit log'),
    eval: program.command('eval').description('evaluations of models and adapters (the safety red-team suite)'),
  };
  for (const mod of [modelCmds, dataCmds, deidCmds, privacyCmds, pkiCmds, federationCmds, siteAgentCmds, demoCmds, opsCmds, auditCmds, researcherCmds, serveCmds, gateCmds, apiTokenCmds, dbAtRestCmds, examCmds, reviewCmds, distillCmds]) mod.register(groups);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    if (isFedloraError(e)) {
      process.stderr.write(`error ${e.code}: ${e.message}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`error: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exitCode = 1;
    }
    // A failed command may have started servers or timers; nothing more will happen, so leave.
    process.exit(process.exitCode);
  }
}
