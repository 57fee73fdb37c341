import type { Command } from 'commander';

/** The command groups every cli/commands/*.ts module may add subcommands to. */
export interface CliGroups {
  program: Command; // top level: train, generate, deid, synth, demo, doctor
  model: Command;
  site: Command;
  coordinator: Command;
  ca: Command;
  job: Command;
  adapter: Command;
  privacy: Command;
  audit: Command;
  eval: Command;
}
