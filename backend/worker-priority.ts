// Worker threads that do input-sized work for one request (tokenizing, chat templating, schema
// compiling, parsing large JSON bodies) run at a lower CPU priority than the request loop and the
// engine: on a busy machine the scheduler serves the loop first, so one client's multi-megabyte
// prompt waits for CPU instead of every small request waiting behind it. Linux keeps a nice value
// per thread, so setpriority(0) from a worker lowers that worker alone; elsewhere it would lower
// the whole process, so it is skipped. Nice 10 (about a tenth of a nice-0 thread's share under
// contention), not 19: large inputs must still finish on a machine the engine keeps busy.
import os from 'node:os';

export const WORKER_NICE = 10;

/** Call once at the top of a worker thread. Returns whether the priority was lowered. */
export function lowerWorkerThreadPriority(): boolean {
  if (process.platform !== 'linux') return false;
  try {
    os.setPriority(Math.max(os.getPriority(), WORKER_NICE));
    return true;
  } catch {
    // A sandbox that forbids setpriority leaves the worker at the loop's priority: slower
    // neighbours under load, nothing worse.
    return false;
  }
}
