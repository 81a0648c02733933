// A local HTTP server laid out like the Hugging Face Hub (revision API + resolve URLs), serving
// PEFT adapter directories, with private repos and optional slowness, for adapter_source "hub".
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

export interface HubRepo {
  dir: string;
  /** Bearer token required to read it (a private repo). */
  token?: string;
  /** Milliseconds every response of this repo waits (a slow source). */
  delayMs?: number;
}

export interface HubServer {
  endpoint: string;
  requests: string[];
  /** Which bearer token (null: none) came with each request, by repo: to prove a token never reaches another repo. */
  calls: { repo: string; token: string | null }[];
  close(): Promise<void>;
}

export async function startHub(repos: Record<string, HubRepo>): Promise<HubServer> {
  const requests: string[] = [];
  const calls: HubServer['calls'] = [];
  const files = ['adapter_config.json', 'adapter_model.safetensors'];
  const server: Server = createServer(async (req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const url = new URL(req.url ?? '/', 'http://hub');
    const m = /^\/api\/models\/(.+)\/revision\/([^/]+)$/.exec(url.pathname) ?? /^\/(.+)\/resolve\/([^/]+)\/([^/]+)$/.exec(url.pathname);
    if (m) {
      const auth = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
      calls.push({ repo: decodeURIComponent(m[1]!), token: auth ? auth[1]! : null });
    }
    const repo = m ? repos[decodeURIComponent(m[1]!)] : undefined;
    if (!m || !repo) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"Repository not found"}');
      return;
    }
    if (repo.delayMs) await new Promise((r) => setTimeout(r, repo.delayMs));
    if (repo.token && req.headers.authorization !== `Bearer ${repo.token}`) {
      // The real hub answers 401 for private repos without (valid) credentials.
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"Invalid credentials"}');
      return;
    }
    const sha = createHash('sha1').update(repo.dir).digest('hex');
    if (url.pathname.startsWith('/api/')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({ id: decodeURIComponent(m[1]!), sha, private: Boolean(repo.token), siblings: files.map((rfilename) => ({ rfilename })) }),
      );
      return;
    }
    const file = m[3]!;
    if (!files.includes(file)) {
      res.writeHead(404).end();
      return;
    }
    const data = await readFile(join(repo.dir, file));
    // The Hub's file metadata (read by a HEAD first): the commit, and the git blob sha1 as the ETag.
    const etag = createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(data.length), etag: `"${etag}"`, 'x-repo-commit': sha });
    res.end(req.method === 'HEAD' ? undefined : data);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    calls,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
