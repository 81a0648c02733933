// The tensor-core kernels' index mirrors (kernels/test/*_mirror.py: numpy, lane by lane, mma.sync
// emulated from the PTX fragment layout) run here and in CI, where no GPU can run the kernels
// themselves: a change to a fragment mapping fails on any machine, not only on the GPU one. They
// need python3 with numpy: where it is missing, Debian's python3-numpy is installed (saying so).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';

const HERE = import.meta.dirname;

function pythonWithNumpy(): string {
  const has = (py: string) => spawnSync(py, ['-c', 'import numpy'], { stdio: 'ignore' }).status === 0;
  for (const py of ['python3', '/usr/bin/python3']) if (has(py)) return py;
  console.log('kernels/mirrors.test.ts: numpy is missing: installing python3-numpy (apt-get)');
  const apt = spawnSync('sh', ['-c', 'apt-get install -y -qq python3-numpy >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq python3-numpy)'], { stdio: 'inherit' });
  assert.ok(apt.status === 0 && has('/usr/bin/python3'), 'python3 with numpy is needed for the kernel mirrors and could not be installed');
  return '/usr/bin/python3';
}

for (const mirror of ['sgmv_tc_mirror.py', 'quant_mma_mirror.py']) {
  test(`kernel index mirror ${mirror} agrees with float64 matmuls`, { timeout: 120_000 }, () => {
    const r = spawnSync(pythonWithNumpy(), [join(HERE, 'test', mirror)], { encoding: 'utf-8' });
    assert.equal(r.status, 0, `${mirror} failed:\n${(r.stdout + r.stderr).slice(-3000)}`);
    assert.match(r.stdout, /all (mirror checks )?passed/);
  });
}
