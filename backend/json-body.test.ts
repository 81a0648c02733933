// Request bodies read from a real Node HTTP server (json-body.ts's readJsonStream): small ones are
// parsed inline, large ones go to the parser thread chunk by chunk as they arrive and are never
// gathered on the loop, and every body gets the same answer (value or error) whatever its size.
import assert from 'node:assert/strict';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { bodyStats, INLINE_MAX_BYTES, JsonBodyError, parseJsonBody, readJsonStream } from './json-body.ts';

const MAX = 4 * 1024 * 1024;

/** The server answers 200 with the parsed value re-serialised, or the error's status and message. */
let server: Server;
let base = '';

before(async () => {
  server = createServer((req: IncomingMessage, res) => {
    const declared = Number(req.headers['content-length'] ?? 'NaN');
    readJsonStream(req, { maxBytes: MAX, declaredBytes: Number.isFinite(declared) ? declared : null, tooLarge: () => new JsonBodyError('too large', 413) }).then(
      ({ value }) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(value));
      },
      (err: Error) => {
        res.writeHead(err instanceof JsonBodyError ? err.status : 500, { connection: 'close' });
        res.end(err.message);
      },
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => new Promise<void>((r) => server.close(() => r())));

/** POSTs `pieces` as a chunked body (no Content-Length) or, with `length`, as one sized body. */
function post(pieces: Buffer[], length: boolean): Promise<{ status: number; text: string } | { error: string }> {
  return new Promise((resolve) => {
    const total = pieces.reduce((a, p) => a + p.length, 0);
    const req = request(`${base}/`, { method: 'POST', headers: length ? { 'content-length': total } : { 'transfer-encoding': 'chunked' } }, (res) => {
      let text = '';
      res.setEncoding('utf-8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', (e) => resolve({ error: e.message }));
    let i = 0;
    const write = () => {
      while (i < pieces.length) if (!req.write(pieces[i++]!)) return void req.once('drain', write);
      req.end();
    };
    write();
  });
}

/** `bytes` in pieces of `size` (odd sizes split multi-byte characters between chunks). */
function split(bytes: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return out;
}

const bigValue = (chars: number) => ({ inputs: 'é the quick brown fox 🦊 '.repeat(Math.ceil(chars / 24)).slice(0, chars), parameters: { max_new_tokens: 4, stop: ['\n'] } });

/** What parseJsonBody answers inline for these bytes: the value, or the error's status and message. */
function inlineAnswer(bytes: Buffer): { status: number; text: string } {
  try {
    return { status: 200, text: JSON.stringify(parseJsonBody(bytes)) };
  } catch (err) {
    return { status: (err as JsonBodyError).status, text: (err as Error).message };
  }
}

describe('readJsonStream', () => {
  it('parses a small body inline and a large one on the parser thread, chunk by chunk', async () => {
    const small = Buffer.from(JSON.stringify({ inputs: 'hello', parameters: {} }));
    const s0 = { ...bodyStats };
    assert.deepEqual(await post([small], true), { status: 200, text: small.toString() });
    assert.equal(bodyStats.gatheredBytes - s0.gatheredBytes, small.length);
    assert.equal(bodyStats.streamedBytes, s0.streamedBytes);

    for (const length of [true, false]) {
      const big = Buffer.from(JSON.stringify(bigValue(2_000_000)));
      assert.ok(big.length > INLINE_MAX_BYTES);
      const s1 = { ...bodyStats };
      const r = await post(split(big, 40_001), length);
      assert.deepEqual(r, { status: 200, text: big.toString() }, `content-length: ${length}`);
      // Every byte went to the thread; none was gathered on the loop (with or without a declared size).
      assert.equal(bodyStats.streamedBytes - s1.streamedBytes, big.length);
      assert.equal(bodyStats.streamedBodies - s1.streamedBodies, 1);
      assert.equal(bodyStats.gatheredBytes, s1.gatheredBytes);
    }
  });

  it('answers a large body exactly as parseJsonBody answers it inline', async () => {
    const pad = ' '.repeat(INLINE_MAX_BYTES + 10);
    const bodies = [
      Buffer.from(`{"inputs": "${'x'.repeat(INLINE_MAX_BYTES)}", `), // cut short
      Buffer.from(`${'['.repeat(150)}1${']'.repeat(150)}${pad}`), // too deep
      Buffer.from(pad), // nothing but white space
      Buffer.from(`${pad}"a string"${pad}`),
      Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d, ...Buffer.from(pad)]), // bad UTF-8, decoded with replacement characters
    ];
    for (const b of bodies) {
      const want = inlineAnswer(b);
      assert.deepEqual(await post(split(b, 30_000), true), want, want.text.slice(0, 80));
      assert.deepEqual(await post(split(b, 30_000), false), want, want.text.slice(0, 80));
    }
  });

  it('refuses a chunked body past the limit with the answer (not a reset), and keeps serving', async () => {
    const r = await post(split(Buffer.alloc(MAX + 256 * 1024, 0x20), 64 * 1024), false);
    assert.ok('status' in r, `the client saw ${JSON.stringify(r)}`);
    assert.equal(r.status, 413);
    const ok = Buffer.from(JSON.stringify(bigValue(300_000)));
    assert.deepEqual(await post(split(ok, 64 * 1024), false), { status: 200, text: ok.toString() });
  });

  it('drops a body whose client leaves halfway, and keeps serving', async () => {
    const s0 = { ...bodyStats };
    await new Promise<void>((resolve) => {
      const req = request(`${base}/`, { method: 'POST', headers: { 'content-length': 2_000_000 } });
      req.on('error', () => resolve());
      req.write(Buffer.alloc(500_000, 0x20), () => setTimeout(() => req.destroy(), 100));
      req.on('close', () => resolve());
    });
    assert.equal(bodyStats.streamedBodies - s0.streamedBodies, 1);
    const ok = Buffer.from(JSON.stringify(bigValue(200_000)));
    assert.deepEqual(await post([ok], true), { status: 200, text: ok.toString() });
  });
});
