#!/usr/bin/env node
// The `switchboard` command. The code is TypeScript, run through tsx's loader (no build step):
// `switchboard gateway ...` is the edge gateway (gateway/node.ts), everything else the backend CLI.
import { register } from 'tsx/esm/api';

register();
if (process.argv[2] === 'gateway') {
  const { gatewayMain } = await import('../gateway/node.ts');
  await gatewayMain(process.argv.slice(3));
} else {
  await import('../backend/cli.ts');
}
