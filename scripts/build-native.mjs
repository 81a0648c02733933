#!/usr/bin/env node
// Builds the native addon with cmake-js (run by `npm install` / `npm ci`). A failed build fails
// the install loudly: nothing runs without the engine. SWITCHBOARD_CPU_ONLY=1 skips CUDA.
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cmakeJs = join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
const args = ['--directory', join(root, 'native'), '--out', join(root, 'native', 'build')];
// Explicit every time: cmake caches options, so an earlier CPU-only build would stay CPU-only.
const cpuOnly = Boolean(process.env.SWITCHBOARD_CPU_ONLY && process.env.SWITCHBOARD_CPU_ONLY !== '0');
args.push(`--CDSWITCHBOARD_CUDA=${cpuOnly ? 'OFF' : 'ON'}`);
// e.g. "90" on an H100 build box, "80;90" (the default) for images that serve A100s and H100s.
if (process.env.SWITCHBOARD_CUDA_ARCHS) args.push(`--CDCMAKE_CUDA_ARCHITECTURES=${process.env.SWITCHBOARD_CUDA_ARCHS}`);
// Build against the headers of the Node that runs us when they are installed beside it, so no
// header download is needed (there may be no internet at install time).
const env = { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: String(availableParallelism()) };
const nodePrefix = dirname(dirname(process.execPath));
if (!env.npm_config_nodedir && existsSync(join(nodePrefix, 'include', 'node', 'node_api.h'))) {
  env.npm_config_nodedir = nodePrefix;
}
// Configure, then build: configuring every time re-reads what the build depends on (nvcc, cuBLAS,
// SWITCHBOARD_CPU_ONLY, SWITCHBOARD_CUBLAS_ROOT) where `cmake-js compile` would reuse an old
// configuration; ninja then rebuilds only what changed.
let res = spawnSync(process.execPath, [cmakeJs, 'configure', ...args], { cwd: root, stdio: 'inherit', env });
if (res.status === 0) res = spawnSync(process.execPath, [cmakeJs, 'build', ...args], { cwd: root, stdio: 'inherit', env });
if (res.status !== 0) {
  console.error('switchboard: building the native engine failed (see above). Needs cmake >= 3.18 and a C++17 compiler.');
  process.exit(res.status ?? 1);
}
