// The Worker build in a real Workers runtime: gateway/worker.ts bundled the way wrangler bundles
// it (esbuild, workerd export conditions; entry and compatibility date read from wrangler.toml)
// and run by Miniflare 3 (workerd) on a loopback port. Miniflare's `cf: false` keeps it offline.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Miniflare } from 'miniflare';

const ROOT = join(import.meta.dirname, '..', '..', '..');

export interface WranglerConfig {
  main: string;
  compatibilityDate: string;
  vars: Record<string, string>;
}

/** The few wrangler.toml keys the test needs (flat keys and the [vars] table). */
export function readWranglerToml(): WranglerConfig {
  const text = readFileSync(join(ROOT, 'wrangler.toml'), 'utf-8');
  let section = '';
  const top: Record<string, string> = {};
  const vars: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const l = line.trim();
    if (!l || l.startsWith('#')) continue;
    const sec = /^\[([^\]]+)\]$/.exec(l);
    if (sec) {
      section = sec[1]!;
      continue;
    }
    const kv = /^([A-Za-z0-9_]+)\s*=\s*"([^"]*)"/.exec(l);
    if (!kv) continue;
    if (section === '') top[kv[1]!] = kv[2]!;
    else if (section === 'vars') vars[kv[1]!] = kv[2]!;
  }
  if (!top.main || !top.compatibility_date) throw new Error('wrangler.toml needs main and compatibility_date');
  return { main: top.main, compatibilityDate: top.compatibility_date, vars };
}

export async function bundleWorker(): Promise<{ code: string; config: WranglerConfig }> {
  const config = readWranglerToml();
  const out = await build({
    entryPoints: [join(ROOT, config.main)],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    conditions: ['workerd', 'worker', 'browser'],
    mainFields: ['browser', 'module', 'main'],
    write: false,
    logLevel: 'silent',
  });
  return { code: out.outputFiles[0]!.text, config };
}

export interface RunningWorker {
  url: string;
  close(): Promise<void>;
}

export async function startWorker(bindings: Record<string, string>): Promise<RunningWorker> {
  const { code, config } = await bundleWorker();
  const mf = new Miniflare({
    modules: true,
    script: code,
    compatibilityDate: config.compatibilityDate,
    bindings: { ...config.vars, ...bindings },
    cf: false,
    host: '127.0.0.1',
    port: 0,
    verbose: false,
  });
  const url = await mf.ready;
  return { url: url.origin, close: () => mf.dispose() };
}
