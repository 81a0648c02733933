// A local server that answers like the Hugging Face Hub for whole repos (models or adapters):
// the revision API, HEAD/GET on resolve URLs with the Hub's headers (X-Repo-Commit, ETag = git blob
// sha1, X-Linked-Etag = sha256 and a redirect to a CDN for LFS files), Range requests, private
// repos (401 without the token), several revisions, and faults on demand: a connection cut
// mid-file once, or a file served corrupted. The CDN is a second server (another origin), so a
// test can check that credentials never leave the Hub.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HubModelRepo {
  /** Revision name (branch or tag) -> files (repo-relative name -> content). */
  revisions: Record<string, Record<string, Uint8Array>>;
  /** Bearer token a private repo requires. */
  token?: string;
  gated?: boolean;
}

export interface HubFaults {
  /** "repo:file" whose first GET of content is cut off halfway (the socket is destroyed). */
  cutOnce?: Set<string>;
  /** "repo:file" served with one byte flipped, every time. */
  corrupt?: Set<string>;
}

export interface RecordedRequest {
  server: 'hub' | 'cdn';
  method: string;
  path: string;
  range?: string;
  auth?: string;
}

export interface HubModelServer {
  endpoint: string;
  cdn: string;
  requests: RecordedRequest[];
  /** Commit hash of a revision of a repo (as the server advertises it). */
  commit(repo: string, revision: string): string;
  faults: HubFaults;
  /** Bytes of file content sent (hub + cdn), to show a resume did not start over. */
  bytesSent(): number;
  close(): Promise<void>;
}

const LFS = (name: string, data: Uint8Array) => /\.(safetensors|bin|pt|gguf)$/.test(name) || data.byteLength > 10_000;

export function gitBlobSha1(data: Uint8Array): string {
  return createHash('sha1').update(`blob ${data.byteLength}\0`).update(data).digest('hex');
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function commitOf(repo: string, files: Record<string, Uint8Array>): string {
  const h = createHash('sha1').update(repo);
  for (const name of Object.keys(files).sort()) h.update(name).update(gitBlobSha1(files[name]!));
  return h.digest('hex');
}

function listen(server: Server): Promise<string> {
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

export async function startHubModelServer(repos: Record<string, HubModelRepo>, faults: HubFaults = {}): Promise<HubModelServer> {
  const requests: RecordedRequest[] = [];
  let sent = 0;
  const blobs = new Map<string, { repo: string; file: string; data: Uint8Array }>();
  const commits = new Map<string, { repo: string; files: Record<string, Uint8Array> }>();
  for (const [repo, r] of Object.entries(repos)) {
    for (const files of Object.values(r.revisions)) {
      commits.set(commitOf(repo, files), { repo, files });
      for (const [file, data] of Object.entries(files)) blobs.set(`${repo}/${sha256(data)}`, { repo, file, data });
    }
  }
  const record = (server: 'hub' | 'cdn', req: IncomingMessage) => {
    requests.push({
      server,
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      ...(req.headers.range ? { range: req.headers.range } : {}),
      ...(req.headers.authorization ? { auth: req.headers.authorization } : {}),
    });
  };

  /** Sends (part of) a file, honouring Range, with the faults configured for it. */
  const sendBytes = (req: IncomingMessage, res: ServerResponse, key: string, data: Uint8Array, headers: Record<string, string>) => {
    let body = data;
    if (faults.corrupt?.has(key)) {
      body = Uint8Array.from(data);
      body[body.length >> 1]! ^= 0xff;
    }
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    let start = 0;
    if (m) {
      start = Number(m[1]);
      if (start >= body.length) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
    }
    const slice = body.subarray(start);
    const status = m ? 206 : 200;
    const h: Record<string, string> = { ...headers, 'content-length': String(slice.length), 'accept-ranges': 'bytes' };
    if (m) h['content-range'] = `bytes ${start}-${body.length - 1}/${body.length}`;
    if (req.method === 'HEAD') {
      res.writeHead(status, h).end();
      return;
    }
    if (faults.cutOnce?.has(key)) {
      faults.cutOnce.delete(key);
      const half = slice.subarray(0, Math.max(1, slice.length >> 1));
      res.writeHead(status, h);
      sent += half.length;
      res.write(half, () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    sent += slice.length;
    res.writeHead(status, h).end(slice);
  };

  const cdnServer = createServer((req, res) => {
    record('cdn', req);
    const m = /^\/([^/]+\/[^/]+)\/blobs\/([0-9a-f]{64})/.exec(req.url ?? '');
    const blob = m ? blobs.get(`${m[1]}/${m[2]}`) : undefined;
    if (!blob) return void res.writeHead(404).end();
    sendBytes(req, res, `${blob.repo}:${blob.file}`, blob.data, { 'content-type': 'application/octet-stream' });
  });
  const cdn = await listen(cdnServer);

  const notFound = (res: ServerResponse, code: string) =>
    res.writeHead(404, { 'content-type': 'application/json', 'x-error-code': code }).end(JSON.stringify({ error: code }));

  const hubServer = createServer((req, res) => {
    record('hub', req);
    const url = new URL(req.url ?? '/', 'http://hub');
    const api = /^\/api\/models\/(.+)\/revision\/([^/]+)$/.exec(url.pathname);
    const resolve = api ? null : /^\/([^/]+(?:\/[^/]+)?)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const repoId = decodeURIComponent((api ?? resolve)?.[1] ?? '');
    const repo = repos[repoId];
    if (!repo) return notFound(res, 'RepoNotFound');
    if (repo.token && req.headers.authorization !== `Bearer ${repo.token}`) {
      return void res.writeHead(401, { 'content-type': 'application/json', 'x-error-code': repo.gated ? 'GatedRepo' : 'RepoNotFound' }).end('{"error":"Invalid credentials"}');
    }
    const revision = decodeURIComponent((api ?? resolve)![2]!);
    const files = repo.revisions[revision] ?? (commits.get(revision)?.repo === repoId ? commits.get(revision)!.files : undefined);
    if (!files) return notFound(res, 'RevisionNotFound');
    const commit = commitOf(repoId, files);
    if (api) {
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({ id: repoId, sha: commit, private: Boolean(repo.token), gated: repo.gated ?? false, siblings: Object.keys(files).map((rfilename) => ({ rfilename })) }),
      );
    }
    const file = decodeURIComponent(resolve![3]!);
    const data = files[file];
    if (!data) return notFound(res, 'EntryNotFound');
    const common = { 'x-repo-commit': commit };
    if (LFS(file, data)) {
      // The Hub answers LFS files with a redirect to its CDN, the sha256 in X-Linked-Etag.
      const sha = sha256(data);
      return void res
        .writeHead(302, { ...common, location: `${cdn}/${repoId}/blobs/${sha}?signature=x`, 'x-linked-etag': `"${sha}"`, 'x-linked-size': String(data.byteLength), etag: `"${gitBlobSha1(data)}"` })
        .end();
    }
    sendBytes(req, res, `${repoId}:${file}`, data, { ...common, etag: `"${gitBlobSha1(data)}"`, 'content-type': 'application/octet-stream' });
  });
  const endpoint = await listen(hubServer);

  return {
    endpoint,
    cdn,
    requests,
    faults,
    commit: (repo, revision) => commitOf(repo, repos[repo]!.revisions[revision]!),
    bytesSent: () => sent,
    close: async () => {
      hubServer.closeAllConnections();
      cdnServer.closeAllConnections();
      await Promise.all([new Promise((r) => hubServer.close(r)), new Promise((r) => cdnServer.close(r))]);
    },
  };
}
