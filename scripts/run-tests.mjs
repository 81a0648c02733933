#!/usr/bin/env node
// `npm test`: every *.test.ts in the repo (beside the code it tests, or under test/), through
// Node's own test runner with tsx. Extra arguments narrow the run to paths containing them.
// First it installs what the tests need beyond npm packages and is missing (redis-server, the
// infra tools: infra/tools/install.sh says each one it installs), so a fresh machine with Node, a
// C++ compiler and cmake passes as it is. SWITCHBOARD_SKIP_TOOL_INSTALL=1 skips that step.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { delimiter, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const skip = new Set(['node_modules', '.git', 'build', '.devnode', '.devcarry', '.wrangler']);

function walk(dir, out) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (skip.has(e.name)) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (e.name.endsWith('.test.ts')) out.push(relative(root, p));
  }
  return out;
}

const filters = process.argv.slice(2);
const files = walk(root, []).filter((f) => filters.length === 0 || filters.some((x) => f.includes(x))).sort();
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
// Only the tests that use them need the tools: the infra checks and whatever starts redis-server.
const needsTools = files.some((f) => f.startsWith('infra/') || f.startsWith(join('test', 'gateway')) || f.startsWith(join('gateway', 'store')));
if (needsTools && process.env.SWITCHBOARD_SKIP_TOOL_INSTALL !== '1') {
  const tools = spawnSync('bash', [join(root, 'infra', 'tools', 'install.sh')], { cwd: root, stdio: 'inherit' });
  if (tools.status !== 0) {
    console.error('npm test: the test tools are missing and could not be installed (see above)');
    process.exit(tools.status ?? 1);
  }
}
// helm lands in infra/tools/bin when installed without root.
const PATH = `${join(root, 'infra', 'tools', 'bin')}${delimiter}${process.env.PATH ?? ''}`;
const res = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', ...files], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, PATH },
});
process.exit(res.status ?? 1);
