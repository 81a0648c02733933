// The access log's writer never blocks on a reader that stopped reading, and says what it dropped.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { boundedLineWriter } from './log-sink.ts';

test('a stalled reader: lines past the bound are dropped and counted, then the count is written once it drains', async () => {
  const written: string[] = [];
  let release: (() => void) | null = null;
  // Accepts each chunk only when released: a pipe whose reader has stopped.
  const stalled = new Writable({
    highWaterMark: 16,
    write(chunk, _enc, cb) {
      written.push(chunk.toString());
      release = cb;
    },
  });
  const write = boundedLineWriter(stalled, 100);
  const t0 = performance.now();
  for (let i = 0; i < 1000; i++) write(`line ${String(i).padStart(4, '0')} xxxxxxxxxx\n`);
  assert.ok(performance.now() - t0 < 200, 'writing never waits for the reader');
  // The first line went to the stream; about 100 bytes more were buffered; the rest was dropped.
  assert.equal(written.length, 1);
  assert.ok(stalled.writableLength <= 100 + 22, `buffered ${stalled.writableLength} bytes`);
  // The reader catches up.
  while (release) {
    const r: () => void = release;
    release = null;
    r();
    await new Promise((res) => setImmediate(res));
  }
  write('after\n');
  while (release) {
    const r: () => void = release;
    release = null;
    r();
    await new Promise((res) => setImmediate(res));
  }
  const tail = written.slice(-2);
  assert.match(tail[0]!, /^\[switchboard\] 99\d log line\(s\) dropped: stderr was not being read\n$/);
  assert.equal(tail[1], 'after\n');
});

test('a reader that went away (EPIPE) does not crash the process', async () => {
  const broken = new Writable({ write(_c, _e, cb) { cb(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' })); } });
  const write = boundedLineWriter(broken, 100);
  write('one\n');
  await new Promise((res) => setImmediate(res));
  write('two\n');
  assert.ok(broken.destroyed);
});
