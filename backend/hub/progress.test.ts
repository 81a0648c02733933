// The progress reporter: plain lines at a bounded rate off a terminal, a redrawn bar on one, with
// bytes, rate over the recent window and ETA.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatBytes, formatDuration, Progress } from './progress.ts';

function sink(isTTY: boolean) {
  const out: string[] = [];
  return { out, isTTY, columns: 80, write: (t: string) => out.push(t) };
}

describe('Progress', () => {
  it('writes a plain line every few seconds when stderr is no terminal', () => {
    let now = 0;
    const s = sink(false);
    const p = new Progress({ label: 'downloading org/m', total: 100e6, sink: s, logEvery: 5, now: () => now });
    for (let i = 1; i <= 20; i++) {
      now = i; // 1 s per 5 MB
      p.add(5e6);
    }
    // Lines at t=1 (first), then every 5 s: 6, 11, 16.
    assert.equal(s.out.length, 4, s.out.join(''));
    assert.equal(s.out[1], 'downloading org/m: 30.0 MB / 100.0 MB (30%) 5.00 MB/s ETA 14s\n');
    assert.ok(s.out.every((l) => !l.includes('\r')));
    p.finish();
    assert.equal(s.out.at(-1), 'downloading org/m: 100.0 MB in 20s (5.00 MB/s)\n');
  });

  it('redraws one line with a bar on a terminal', () => {
    let now = 0;
    const s = sink(true);
    const p = new Progress({ label: 'x', total: 1000, sink: s, now: () => now });
    now = 1;
    p.add(500);
    assert.match(s.out[0]!, /^\rx: 500 B \/ 1.00 kB \(50%\) 500 B\/s ETA 1s \[#+\.+\]\x1b\[K$/);
    now = 1.05;
    p.add(10);
    assert.equal(s.out.length, 1, 'redraws at most every 100 ms');
    p.finish('done');
    assert.equal(s.out.at(-1), '\rdone\x1b[K\n');
  });

  it('formats sizes and durations', () => {
    assert.deepEqual([formatBytes(999), formatBytes(1500), formatBytes(14.5e9)], ['999 B', '1.50 kB', '14.5 GB']);
    assert.deepEqual([formatDuration(59), formatDuration(156), formatDuration(7325), formatDuration(Infinity)], ['59s', '2m36s', '2h02m', '?']);
  });
});
