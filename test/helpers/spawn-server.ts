// A `switchboard` server (serve or gateway) as its own process, for tests and benchmarks that must
// not share an event loop with the server they measure: resolves once it logs where it listens.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

export const ROOT = join(import.meta.dirname, '..', '..');

export interface ServerProcess {
  proc: ChildProcess;
  url: string;
  /** The last 20,000 characters it wrote to stderr. */
  log: () => string;
}

/** Runs `node <argv>` (argv defaults to the switchboard binary's arguments) and waits for "listening on URL". */
export function spawnServer(args: string[], env: NodeJS.ProcessEnv = {}, argv: string[] = [join(ROOT, 'bin', 'switchboard.mjs'), ...args]): Promise<ServerProcess> {
  const proc = spawn(process.execPath, argv, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let err = '';
  return new Promise((resolve, reject) => {
    proc.stderr!.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-20_000);
      const m = /listening on (\S+)/.exec(err);
      if (m) resolve({ proc, url: m[1]!, log: () => err });
    });
    proc.once('exit', (code) => reject(new Error(`${args[0] ?? argv[0]} exited ${code}: ${err.slice(-3000)}`)));
  });
}

/** SIGTERM, then waits for the exit. */
export async function stopServer(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await exited;
}
