// The Node gateway's upstream fetch (node-fetch.ts) behaves as fetch does for what the gateway
// reads: JSON answers with or without a Content-Length are buffered (and past 1 MiB streamed,
// intact), a body reads once, a BOM is dropped, headers are all there, an answer cut short is an
// error, and an abort reaches the request; event streams are read without a web stream; stream
// request bodies go out chunked and a failing one aborts the request.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createNodeFetch } from './node-fetch.ts';

describe('node fetch', () => {
  let server: Server;
  let base: string;
  const f = createNodeFetch();
  const big = JSON.stringify({ text: 'y'.repeat(1536 * 1024) });

  before(async () => {
    server = createServer((req, res) => {
      switch (req.url) {
        case '/sized':
          res.setHeader('content-type', 'application/json');
          return res.end('{"a":1}'); // headers not written yet: Node sends a Content-Length
        case '/chunked':
          res.writeHead(200, { 'content-type': 'application/json', 'x-many': ['1', '2'] });
          res.write('{"a":');
          return res.end('2}');
        case '/big-chunked':
          res.writeHead(200, { 'content-type': 'application/json' });
          return res.end(big);
        case '/bom':
          res.setHeader('content-type', 'application/json; charset=utf-8');
          return res.end(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"é":"雪"}')]));
        case '/cut':
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
          res.write('{"a":');
          setTimeout(() => res.socket?.destroy(), 20);
          return;
        case '/slow':
          res.writeHead(200, { 'content-type': 'application/json' });
          res.write('{');
          return;
        case '/events': {
          // Three events a few ms apart, then one more after the reader has waited a while.
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          let i = 0;
          const next = () => {
            res.write(`data: ${i}\n\n`);
            if (++i < 4) setTimeout(next, i === 3 ? 150 : 5);
            else res.end();
          };
          return next();
        }
        case '/echo': {
          // The request body's length and first/last bytes, and how it was framed.
          const parts: Buffer[] = [];
          req.on('data', (c: Buffer) => parts.push(c));
          req.on('end', () => {
            const b = Buffer.concat(parts);
            res.setHeader('content-type', 'application/json');
            res.end(JSON.stringify({ length: b.length, head: b.subarray(0, 4).toString(), tail: b.subarray(-4).toString(), chunked: req.headers['transfer-encoding'] === 'chunked' }));
          });
          req.on('error', () => {});
          return;
        }
        case '/empty':
          res.writeHead(204, { 'x-kind': 'empty' });
          return res.end();
        case '/events-cut':
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write('data: 0\n\n');
          setTimeout(() => res.socket?.destroy(), 20);
          return;
        default:
          res.writeHead(404, { 'content-type': 'text/plain' });
          return res.end('no');
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it('buffers JSON answers with and without a Content-Length, readable once', async () => {
    for (const [path, want] of [['/sized', { a: 1 }], ['/chunked', { a: 2 }]] as const) {
      const r = await f(`${base}${path}`);
      assert.equal(r.status, 200);
      assert.equal(r.ok, true);
      assert.equal(r.bodyUsed, false);
      assert.ok(r.body, 'a body is there before it is read');
      assert.deepEqual(await r.json(), want);
      assert.equal(r.bodyUsed, true);
      await assert.rejects(r.text(), TypeError);
    }
    const c = await f(`${base}/chunked`);
    assert.equal(c.headers.get('content-type'), 'application/json');
    assert.equal(c.headers.get('x-many'), '1, 2');
    const copy = c.clone();
    assert.equal(await c.text(), '{"a":2}');
    assert.equal(await copy.text(), '{"a":2}');
  });

  it('a buffered body read as a stream, and a BOM dropped by text()', async () => {
    const r = await f(`${base}/chunked`);
    const reader = r.body!.getReader();
    const parts: Uint8Array[] = [];
    for (;;) {
      const x = await reader.read();
      if (x.done) break;
      parts.push(x.value);
    }
    assert.equal(Buffer.concat(parts).toString(), '{"a":2}');
    await assert.rejects(r.text(), TypeError);
    assert.deepEqual(await (await f(`${base}/bom`)).json(), { é: '雪' });
  });

  it('a chunked JSON answer past 1 MiB arrives whole, as a stream', async () => {
    const r = await f(`${base}/big-chunked`);
    assert.equal(await r.text(), big);
  });

  it('an event stream is read without a web stream: chunks that queued meanwhile come as one, an end is an end', async () => {
    const r = await f(`${base}/events`);
    assert.equal(r.headers.get('content-type'), 'text/event-stream');
    const reader = (r as unknown as { directReader(): ReadableStreamDefaultReader<Uint8Array> }).directReader();
    assert.throws(() => (r as unknown as { directReader(): unknown }).directReader(), TypeError, 'a body reads once');
    await new Promise((res) => setTimeout(res, 100)); // events 0-2 arrive while nobody reads
    const first = await reader.read();
    assert.equal(Buffer.from(first.value!).toString(), 'data: 0\n\ndata: 1\n\ndata: 2\n\n');
    const second = await reader.read(); // waits for the last event
    assert.equal(Buffer.from(second.value!).toString(), 'data: 3\n\n');
    assert.equal((await reader.read()).done, true);
    // The same answer through `body` and text(), for callers that want those.
    assert.equal(await (await f(`${base}/events`)).text(), 'data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n');
    const web = (await f(`${base}/events`)).body!.getReader();
    let all = '';
    for (let x = await web.read(); !x.done; x = await web.read()) all += Buffer.from(x.value).toString();
    assert.equal(all, 'data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n');
    // Cut short: the pending read fails, it never ends cleanly.
    const cut = (await f(`${base}/events-cut`)) as unknown as { directReader(): ReadableStreamDefaultReader<Uint8Array> };
    const cr = cut.directReader();
    assert.equal(Buffer.from((await cr.read()).value!).toString(), 'data: 0\n\n');
    await assert.rejects(cr.read(), Error);
  });

  it('a stream body goes out chunked and whole, one that fails aborts the request; a 204 has no body', async () => {
    const chunk = (i: number) => new TextEncoder().encode(`${String(i).padStart(4, '0')}${'x'.repeat(16 * 1024 - 4)}`);
    let i = 0;
    const upload = new ReadableStream<Uint8Array>({
      pull(c) {
        if (i < 40) c.enqueue(chunk(i++));
        else c.close();
      },
    });
    const r = await f(`${base}/echo`, { method: 'POST', body: upload, duplex: 'half' } as RequestInit);
    assert.deepEqual(await r.json(), { length: 40 * 16 * 1024, head: '0000', tail: 'xxxx', chunked: true });
    const bytes = await f(`${base}/echo`, { method: 'POST', body: 'abcdefgh' });
    assert.deepEqual(await bytes.json(), { length: 8, head: 'abcd', tail: 'efgh', chunked: false });
    let sent = 0;
    const failing = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent++ < 3) c.enqueue(chunk(sent));
        else c.error(new Error('body past its limit'));
      },
    });
    await assert.rejects(f(`${base}/echo`, { method: 'POST', body: failing, duplex: 'half' } as RequestInit), /past its limit/);
    const empty = await f(`${base}/empty`);
    assert.equal(empty.status, 204);
    assert.equal(empty.headers.get('x-kind'), 'empty');
    assert.equal(await empty.text(), '');
  });

  it('an answer cut short is an error, never a clean end; an abort reaches the request', async () => {
    const cut = await f(`${base}/cut`).then((r) => r.text()).then(
      () => null,
      (err: Error) => err,
    );
    assert.ok(cut instanceof Error, 'the cut answer failed');
    const ac = new AbortController();
    const p = f(`${base}/slow`, { signal: ac.signal });
    setTimeout(() => ac.abort(new Error('client gone')), 30);
    await assert.rejects(p, /client gone/);
    const notJson = await f(`${base}/nope`);
    assert.equal(notJson.status, 404);
    assert.equal(await notJson.text(), 'no');
  });
});
