// Requests a fetch client cannot write (no Host header, an HTTP/1.0 request line, an endless
// chunked body), to check what a server answers to them.
import { request } from 'node:http';
import { connect } from 'node:net';

/** Sends `bytes` to the server at `url`, half-closes, and resolves with the whole answer. */
export function rawRequest(url: string, bytes: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), hostname, () => sock.end(bytes));
    let data = '';
    sock.on('data', (d: Buffer) => (data += d.toString()));
    sock.on('end', () => resolve(data));
    sock.on('error', reject);
  });
}

/** A raw HTTP/1.1 request with a chunked body of `chunks` x 64 KiB; the status and body, or the socket error. */
export function chunked(url: string, path: string, method: string, headers: Record<string, string>, chunks: number): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const u = new URL(url);
    const req = request({ host: u.hostname, port: u.port, method, path, headers: { ...headers, 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', (e) => resolve({ error: e.message }));
    let i = 0;
    const write = () => {
      while (i < chunks) {
        i++;
        if (!req.write(Buffer.alloc(64 * 1024, 0x20))) return void req.once('drain', write);
      }
      req.end();
    };
    write();
  });
}
