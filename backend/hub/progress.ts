// Progress of a long byte-counted task (downloads, weight loading): a redrawn one-line bar with
// bytes, rate and ETA on a terminal; on anything else (logs, CI, systemd) a plain line every few
// seconds, so log files are not flooded with carriage returns.

export interface ProgressSink {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  /** What is being counted, e.g. "downloading mistralai/Mistral-7B-v0.1". */
  label: string;
  /** Bytes expected in all; 0 or less when unknown. */
  total: number;
  /** Where to draw (default process.stderr). */
  sink?: ProgressSink;
  /** Force the terminal bar on or off (default: the sink's isTTY). */
  tty?: boolean;
  /** Seconds between plain log lines (default 5); the bar redraws at most every 100 ms. */
  logEvery?: number;
  now?: () => number;
}

export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  const t = Math.round(s);
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  return `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m`;
}

export class Progress {
  private done = 0;
  private readonly start: number;
  private lastDraw = -Infinity;
  /** Recent (time, bytes) samples: the rate is over the last few seconds, not since the start. */
  private samples: [number, number][] = [];
  private finished = false;
  private readonly sink: ProgressSink;
  private readonly tty: boolean;
  private readonly now: () => number;

  constructor(private readonly opts: ProgressOptions) {
    this.sink = opts.sink ?? process.stderr;
    this.tty = opts.tty ?? Boolean(this.sink.isTTY);
    this.now = opts.now ?? (() => performance.now() / 1000);
    this.start = this.now();
    this.samples.push([this.start, 0]);
  }

  get bytes(): number {
    return this.done;
  }

  /** Counts bytes transferred. */
  add(n: number): void {
    this.done += n;
    const t = this.now();
    this.samples.push([t, this.done]);
    while (this.samples.length > 2 && t - this.samples[0]![0] > 5) this.samples.shift();
    const every = this.tty ? 0.1 : (this.opts.logEvery ?? 5);
    if (t - this.lastDraw >= every) this.draw(t);
  }

  /** Bytes per second over the recent window. */
  rate(t = this.now()): number {
    const [t0, b0] = this.samples[0]!;
    return t > t0 ? (this.done - b0) / (t - t0) : 0;
  }

  line(t = this.now()): string {
    const rate = this.rate(t);
    const total = this.opts.total;
    const parts = [this.opts.label + ':'];
    if (total > 0) {
      const pct = Math.min(100, (100 * this.done) / total);
      parts.push(`${formatBytes(this.done)} / ${formatBytes(total)} (${pct.toFixed(0)}%)`);
    } else parts.push(formatBytes(this.done));
    parts.push(`${formatBytes(rate)}/s`);
    if (total > 0) parts.push(`ETA ${rate > 0 ? formatDuration((total - this.done) / rate) : '?'}`);
    return parts.join(' ');
  }

  private draw(t: number): void {
    this.lastDraw = t;
    if (!this.tty) {
      this.sink.write(`${this.line(t)}\n`);
      return;
    }
    const text = this.line(t);
    const width = Math.max(10, (this.sink.columns ?? 100) - text.length - 3);
    const total = this.opts.total;
    const filled = total > 0 ? Math.round((width * Math.min(this.done, total)) / total) : 0;
    const bar = total > 0 ? ` [${'#'.repeat(filled)}${'.'.repeat(width - filled)}]` : '';
    this.sink.write(`\r${text}${bar}`.slice(0, (this.sink.columns ?? 200) + 1) + '\x1b[K');
  }

  /** Ends the bar with a summary line (both modes). */
  finish(summary?: string): void {
    if (this.finished) return;
    this.finished = true;
    const secs = this.now() - this.start;
    const text = summary ?? `${this.opts.label}: ${formatBytes(this.done)} in ${formatDuration(secs)} (${formatBytes(secs > 0 ? this.done / secs : 0)}/s)`;
    this.sink.write(this.tty ? `\r${text}\x1b[K\n` : `${text}\n`);
  }
}
