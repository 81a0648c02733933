// Progress of weight loading (bytes, rate, ETA) while the engine reads the checkpoint on its own
// thread. The engine reads with read()/pread(), so on Linux the process's read byte counter
// (/proc/self/io `rchar`) measures its progress without any hook in the native code. A bar
// repainted in place on a terminal; plain lines every few seconds otherwise (logs, CI, pipes).
import { readFileSync } from 'node:fs';

function bytesRead(): number | null {
  try {
    const m = /^rchar:\s*(\d+)/m.exec(readFileSync('/proc/self/io', 'utf-8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

const mb = (n: number) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : `${(n / 1e6).toFixed(1)} MB`);
const secs = (s: number) => (s >= 90 ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${s.toFixed(0)} s`);

export interface ProgressOptions {
  /** Repaint one line in place (a terminal) instead of writing a line every `lineEveryMs`. */
  tty: boolean;
  write: (text: string) => void;
  lineEveryMs?: number;
  /** Where the byte count comes from (tests); default: /proc/self/io. */
  counter?: () => number | null;
}

/** One progress report as text: what a bar or a plain line shows. */
export function describeProgress(done: number, total: number, elapsedS: number): string {
  const frac = total > 0 ? Math.min(1, done / total) : 0;
  const rate = elapsedS > 0 ? done / elapsedS : 0;
  const eta = rate > 0 && frac < 1 ? ` ETA ${secs((total - done) / rate)}` : '';
  return `${(frac * 100).toFixed(0).padStart(3)}% ${mb(done)} / ${mb(total)} at ${mb(rate)}/s${eta}`;
}

/** Starts watching; `stop()` ends the display (call it when the engine is ready or failed). */
export function watchLoad(total: number, o: ProgressOptions): { stop(): void } {
  const counter = o.counter ?? bytesRead;
  const start = counter();
  const t0 = performance.now();
  if (start === null) {
    o.write(`loading weights (${mb(total)}; no byte counter on this system)\n`);
    return { stop() {} };
  }
  const every = o.tty ? 200 : (o.lineEveryMs ?? 5000);
  let lastLen = 0;
  const tick = () => {
    const done = Math.min(total, Math.max(0, (counter() ?? start) - start));
    const text = describeProgress(done, total, (performance.now() - t0) / 1000);
    if (o.tty) {
      const width = 24;
      const filled = Math.round((total > 0 ? done / total : 0) * width);
      const line = `loading weights [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${text}`;
      o.write(`\r${line.padEnd(lastLen)}`);
      lastLen = line.length;
    } else {
      o.write(`loading weights: ${text}\n`);
    }
  };
  const timer = setInterval(tick, every);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      if (o.tty && lastLen > 0) o.write(`\r${''.padEnd(lastLen)}\r`);
    },
  };
}
