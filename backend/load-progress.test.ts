// Weight loading progress: the text of a report, plain lines when stderr is not a terminal, a bar
// repainted in place when it is, and one honest line where no byte counter exists.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeProgress, watchLoad } from './load-progress.ts';

describe('weight loading progress', () => {
  it('says bytes, share, rate and time left', () => {
    assert.equal(describeProgress(250e6, 1e9, 2), ' 25% 250.0 MB / 1.00 GB at 125.0 MB/s ETA 6 s');
    assert.equal(describeProgress(1e9, 1e9, 4), '100% 1.00 GB / 1.00 GB at 250.0 MB/s');
    assert.match(describeProgress(1e8, 16e9, 1), /ETA 2m39s$/);
  });

  it('writes plain lines off a terminal, from the byte counter', async () => {
    let bytes = 1000;
    const out: string[] = [];
    const w = watchLoad(4e6, { tty: false, write: (t) => out.push(t), lineEveryMs: 20, counter: () => bytes });
    bytes += 1e6;
    await new Promise((r) => setTimeout(r, 70));
    bytes += 3e6;
    await new Promise((r) => setTimeout(r, 50));
    w.stop();
    const n = out.length;
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(out.length, n, 'nothing after stop');
    assert.ok(out.length >= 2, out.join(''));
    assert.match(out[0]!, /^loading weights:  25% 1\.0 MB \/ 4\.0 MB at [\d.]+ MB\/s ETA \d+ s\n$/);
    assert.match(out.at(-1)!, /^loading weights: 100% 4\.0 MB \/ 4\.0 MB at [\d.]+ MB\/s\n$/);
  });

  it('repaints one bar on a terminal and clears it at the end', async () => {
    let bytes = 0;
    const out: string[] = [];
    const w = watchLoad(1e6, { tty: true, write: (t) => out.push(t), counter: () => bytes });
    bytes = 5e5;
    await new Promise((r) => setTimeout(r, 450));
    w.stop();
    assert.ok(out.length >= 2);
    assert.ok(out.every((t) => t.startsWith('\r') && !t.slice(0, -1).includes('\n')), 'no new lines: one line repainted');
    assert.match(out[0]!, /loading weights \[#{12}-{12}\]  50%/);
    assert.match(out.at(-1)!, /^\r *\r$/, 'cleared');
  });

  it('without a byte counter: one line saying so', () => {
    const out: string[] = [];
    watchLoad(2e9, { tty: false, write: (t) => out.push(t), counter: () => null }).stop();
    assert.deepEqual(out, ['loading weights (2.00 GB; no byte counter on this system)\n']);
  });
});
