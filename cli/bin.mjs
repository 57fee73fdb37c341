#!/usr/bin/env node
// Entry point of the `fedlora` command. The product is written in TypeScript and run with
// tsx's loader, so there is no build step between `npm install` and running it.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('./main.ts');
await main(process.argv);
