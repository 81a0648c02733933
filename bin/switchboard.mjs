#!/usr/bin/env node
// The `switchboard` command. The code is TypeScript, run through tsx's loader (no build step):
// `switchboard gateway ...` is the edge gateway (gateway/node.ts), everything else the backend CLI.
// It calls the entry functions explicitly: npx runs this file through a node_modules/.bin link,
// so nothing may depend on how argv[1] is spelled.
import { register } from 'tsx/esm/api';

register();
const argv = process.argv.slice(2);
if (argv[0] === 'gateway') {
  const { gatewayMain } = await import('../gateway/node.ts');
  await gatewayMain(argv.slice(1));
} else {
  const { cliMain } = await import('../backend/cli.ts');
  await cliMain(argv);
}
