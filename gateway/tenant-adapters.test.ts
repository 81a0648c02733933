// fanOut: one upload body to several replicas in lockstep, never buffering what a slow one lags.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fanOut } from './tenant-adapters.ts';

const chunk = (i: number) => new Uint8Array(1024).fill(i % 256);

function source(n: number, pulled: { count: number }, failAt = -1): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>(
    {
      pull(ctl) {
        if (i === failAt) return ctl.error(new Error('too large'));
        if (i === n) return ctl.close();
        pulled.count++;
        ctl.enqueue(chunk(i++));
      },
    },
    { highWaterMark: 0 },
  );
}

async function drain(s: ReadableStream<Uint8Array>, delayMs = 0, seen?: { count: number }): Promise<number> {
  let bytes = 0;
  for await (const c of s as unknown as AsyncIterable<Uint8Array>) {
    bytes += c.byteLength;
    if (seen) seen.count++;
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
  }
  return bytes;
}

describe('fanOut', () => {
  it('every branch gets every byte; the source runs at most a few chunks ahead of the slowest branch', async () => {
    const pulled = { count: 0 };
    const slowSeen = { count: 0 };
    const [fast, slow] = fanOut(source(60, pulled), 2);
    let maxLead = 0;
    const watch = setInterval(() => (maxLead = Math.max(maxLead, pulled.count - slowSeen.count)), 1);
    const [a, b] = await Promise.all([drain(fast!), drain(slow!, 3, slowSeen)]);
    clearInterval(watch);
    assert.equal(a, 60 * 1024);
    assert.equal(b, 60 * 1024);
    assert.ok(maxLead <= 5, `the source ran ${maxLead} chunks ahead of the slow branch`);
  });

  it('a branch that fails drops out; the others still get everything', async () => {
    const [ok, failing] = fanOut(source(20, { count: 0 }), 2);
    const r = failing!.getReader();
    await r.read();
    await r.cancel(new Error('replica went away'));
    assert.equal(await drain(ok!), 20 * 1024);
  });

  it("the source's error reaches every branch", async () => {
    const branches = fanOut(source(50, { count: 0 }, 10), 3);
    // Read together: in lockstep, one branch alone cannot run ahead of the others.
    await Promise.all(branches.map((b) => assert.rejects(drain(b), /too large/)));
  });
});
