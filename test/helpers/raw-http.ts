// Raw HTTP/1 bytes over a socket: for requests a fetch client cannot write (no Host header, an
// HTTP/1.0 request line), to check what a server answers to them.
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
