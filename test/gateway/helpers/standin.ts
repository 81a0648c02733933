// A stand-in upstream for tests of the gateway's own behaviour that a healthy real backend cannot
// produce on demand: dying mid-stream, dying before the first byte, ending a stream early,
// streaming forever, flooding a slow client, a stream cut into awkward chunks. Plain node:http so the test controls the socket.
// Everything about API semantics is tested against the real backend elsewhere.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface StandIn {
  url: string;
  /** Requests by path. */
  hits: Map<string, number>;
  /** Resolves when the connection of the next request with this `inputs` closes (client gone). */
  closed: Map<string, { at: number; bytes: number; blocked: boolean }>;
  /** Headers of the last request per path. */
  lastHeaders: Map<string, IncomingMessage['headers']>;
  /** Bodies of the last request per path. */
  lastBody: Map<string, any>;
  close(): Promise<void>;
}

const token = (i: number) => JSON.stringify({ token: { id: i, text: `t${i}`, logprob: -1, special: false, skipped: false }, generated_text: null, details: null });
const final = (n: number) =>
  JSON.stringify({ token: { id: n, text: `t${n}`, logprob: -1, special: false, skipped: false }, generated_text: 'x'.repeat(n), details: { finish_reason: 'length', prompt_tokens: 7, generated_tokens: n, seed: null } });
const chunk = (content: string) => JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content }, logprobs: null, finish_reason: null }], usage: null });

export interface StandInOptions {
  /** Destroy the socket of every generation request before answering (a replica that is down). */
  dieBeforeFirstByte?: boolean;
}

export async function startStandIn(opts: StandInOptions = {}): Promise<StandIn> {
  const hits = new Map<string, number>();
  const closed = new Map<string, { at: number; bytes: number; blocked: boolean }>();
  const lastHeaders = new Map<string, IncomingMessage['headers']>();
  const lastBody = new Map<string, any>();

  const handle = async (req: IncomingMessage, res: ServerResponse, body: any) => {
    const path = req.url ?? '/';
    if (path === '/health') return res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    if (path === '/info') {
      return res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ model_id: '/models/tiny', max_total_tokens: 512, max_input_length: 511 }));
    }
    if (opts.dieBeforeFirstByte) return req.socket.destroy();
    const inputs: string = body?.inputs ?? body?.messages?.[0]?.content ?? body?.prompt ?? '';
    const sse = () => res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const send = (data: string) => res.write(`data: ${data}\n\n`);
    const openai = path.startsWith('/v1/');
    if (path === '/generate' || (path === '/v1/chat/completions' && !body?.stream)) {
      if (openai) {
        return res.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({ id: 'c', object: 'chat.completion', created: 1, model: body.model, choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, logprobs: null, finish_reason: 'length' }], usage: { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 } }),
        );
      }
      return res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({ generated_text: 'hi', details: { finish_reason: 'length', prompt_tokens: 7, generated_tokens: 2, skipped_tokens: 0, seed: null, prefill: [], tokens: [] } }),
      );
    }
    sse();
    switch (inputs) {
      case 'die-mid': {
        if (openai) {
          send(chunk('a'));
          send(chunk('b'));
        } else {
          send(token(0));
          send(token(1));
        }
        await new Promise((r) => setTimeout(r, 30));
        return req.socket.destroy();
      }
      case 'split': {
        // One stream written in pieces cut at awkward places (inside "data:", inside a CRLF CRLF
        // separator, inside a multi-byte character), each piece a write of its own a few ms
        // apart, so they reach the gateway as separate chunks.
        const events = openai
          ? [chunk('é'), chunk('😀'), chunk('漢字'), JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: body.model, choices: [], usage: { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 } }), '[DONE]']
          : [token(0).replace('"t0"', '"é"'), token(1).replace('"t1"', '"😀"'), final(3).replace('"xxx"', '"é😀漢"')];
        const bytes = Buffer.from(events.map((e, i) => `data: ${e}${i % 2 ? '\r\n\r\n' : '\n\n'}`).join(''));
        const cuts = new Set<number>([3]);
        for (let i = 0; i < bytes.length; i++) {
          if (bytes[i] === 0x0d && bytes[i + 1] === 0x0a && bytes[i + 2] === 0x0d) cuts.add(i + 1).add(i + 3);
          if (bytes[i]! >= 0xc0) cuts.add(i + 1); // just after a lead byte: the character is cut
        }
        let at = 0;
        for (const c of [...cuts].sort((a, b) => a - b)) {
          res.write(bytes.subarray(at, c));
          at = c;
          await new Promise((r) => setTimeout(r, 3));
        }
        return res.end(bytes.subarray(at));
      }
      case 'end-early':
        if (openai) send(chunk('a'));
        else send(token(0));
        return res.end();
      case 'slow-forever': {
        let i = 0;
        let bytes = 0;
        const timer = setInterval(() => {
          const d = openai ? chunk(`w${i++}`) : token(i++);
          bytes += d.length;
          send(d);
        }, 20);
        res.on('close', () => {
          clearInterval(timer);
          closed.set(inputs, { at: Date.now(), bytes, blocked: false });
        });
        return;
      }
      case 'flood': {
        let bytes = 0;
        let blocked = false;
        const big = token(1).replace('"t1"', JSON.stringify('y'.repeat(16 * 1024)));
        res.on('close', () => closed.set(inputs, { at: Date.now(), bytes, blocked }));
        const pump = () => {
          while (!res.destroyed) {
            bytes += big.length;
            if (!res.write(`data: ${big}\n\n`)) {
              blocked = true;
              res.once('drain', pump);
              return;
            }
            if (bytes > 256 * 1024 * 1024) return res.end();
          }
        };
        return pump();
      }
      default:
        if (openai) {
          send(chunk('a'));
          send(chunk('b'));
          send(JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: body.model, choices: [], usage: { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 } }));
          send('[DONE]');
        } else {
          send(token(0));
          send(token(1));
          send(final(3));
        }
        return res.end();
    }
  };

  const server: Server = createServer((req, res) => {
    const path = req.url ?? '/';
    hits.set(path, (hits.get(path) ?? 0) + 1);
    lastHeaders.set(path, req.headers);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body: any = null;
      try {
        body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf-8')) : null;
      } catch {
        body = null;
      }
      lastBody.set(path, body);
      void handle(req, res, body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hits,
    closed,
    lastHeaders,
    lastBody,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}
