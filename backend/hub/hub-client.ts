// The Hugging Face Hub's HTTP protocol, as huggingface_hub speaks it, into the shared cache:
//  - GET  /api/models/<repo>/revision/<rev>  -> the commit a revision names, private/gated, the file list
//  - HEAD /<repo>/resolve/<commit>/<file>    -> X-Repo-Commit, the etag (X-Linked-Etag: sha256 for LFS
//    files, ETag: the git blob sha1 otherwise), the size, and where the bytes are (a CDN redirect for LFS)
//  - GET  that location, with Range to resume blobs/<etag>.incomplete after an interruption.
// Every finished download is checked against its etag (sha256 or git blob sha1) before it becomes a
// blob. A token goes only to the endpoint, for the repo it was given with; never to a redirect
// elsewhere (the CDN's URL carries its own signature).
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, stat, truncate, unlink } from 'node:fs/promises';
import path from 'node:path';
import { isValidRepoId, isValidRevision, RepoCache, safeRelPath } from './hub-cache.ts';
import type { Progress } from './progress.ts';

export type HubErrorKind = 'auth' | 'not-found' | 'network' | 'integrity' | 'offline' | 'invalid' | 'refused';

/** A problem a user can act on; `kind` lets callers map it to their own error shapes. */
export class HubError extends Error {
  constructor(
    message: string,
    readonly kind: HubErrorKind,
  ) {
    super(message);
    this.name = 'HubError';
  }
}

export interface HubClientOptions {
  /** HF_ENDPOINT, e.g. https://huggingface.co. */
  endpoint: string;
  /** The hub cache folder (hubCacheDir()). */
  cacheDir: string;
  fetchImpl?: typeof fetch;
  /** Files downloading at once (default 8, huggingface_hub's default). */
  concurrency?: number;
  /** Attempts to resume one file after a broken connection (default 5). */
  retries?: number;
  /** Milliseconds before the first retry; doubles each time (default 500). */
  retryDelayMs?: number;
  log?: (msg: string) => void;
}

export interface RepoInfo {
  repoId: string;
  revision: string;
  commit: string;
  private: boolean;
  gated: boolean;
  /** Repo-relative file names (the revision's siblings). */
  files: string[];
}

export interface FileMeta {
  file: string;
  commit: string;
  etag: string;
  size: number;
  /** True when the etag is the Hub's sha256 of the content (LFS / Xet files). */
  lfs: boolean;
  /** Where to GET the bytes (the endpoint, or a CDN it redirected to). */
  url: string;
}

/** Access to one repo with one token (or none). */
export interface RepoAccess {
  repoId: string;
  token?: string | undefined;
  signal?: AbortSignal | undefined;
}

function normalizeEtag(v: string | null): string | null {
  if (!v) return null;
  return v.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1') || null;
}

function describeStatus(status: number, what: string, headers?: Headers): HubError {
  const code = headers?.get('x-error-code');
  if (status === 401 || status === 403) {
    const gated = code === 'GatedRepo' ? ' (a gated repo: accept its terms on the Hub first)' : '';
    return new HubError(`${what}: not allowed${gated}; pass a token that can read it (HF_TOKEN)`, 'auth');
  }
  if (status === 404) {
    const which = code === 'RevisionNotFound' ? 'revision not found' : code === 'EntryNotFound' ? 'file not found' : 'not found';
    return new HubError(`${what}: ${which}`, 'not-found');
  }
  return new HubError(`${what}: the Hub answered ${status}`, 'network');
}

async function pool<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown = null;
  const runners = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length && failed === null) {
      const item = items[next++]!;
      try {
        await work(item);
      } catch (err) {
        failed ??= err;
      }
    }
  });
  await Promise.all(runners);
  if (failed !== null) throw failed;
}

function gitBlobSha1(size: number): Hash {
  return createHash('sha1').update(`blob ${size}\0`);
}

export class HubClient {
  readonly endpoint: string;
  private readonly fetch: typeof fetch;
  /** One download per blob path at a time, shared by every caller in this process. */
  private readonly inflight = new Map<string, Promise<void>>();

  constructor(readonly opts: HubClientOptions) {
    this.endpoint = opts.endpoint.replace(/\/+$/, '');
    this.fetch = opts.fetchImpl ?? fetch;
  }

  repo(repoId: string): RepoCache {
    return new RepoCache(this.opts.cacheDir, repoId);
  }

  private headers(access: RepoAccess, url: string): Record<string, string> {
    // The token belongs to the endpoint; a redirect to another origin gets no credentials.
    const sameOrigin = new URL(url).origin === new URL(this.endpoint).origin;
    const h: Record<string, string> = { 'accept-encoding': 'identity', 'user-agent': 'switchboard' };
    if (access.token && sameOrigin) h.authorization = `Bearer ${access.token}`;
    return h;
  }

  private async request(access: RepoAccess, url: string, init: { method?: string; headers?: Record<string, string> }, what: string): Promise<Response> {
    try {
      return await this.fetch(url, {
        method: init.method ?? 'GET',
        headers: { ...this.headers(access, url), ...init.headers },
        redirect: 'manual',
        ...(access.signal ? { signal: access.signal } : {}),
      });
    } catch (err) {
      if (access.signal?.aborted) throw err;
      throw new HubError(`${what}: cannot reach the Hub at ${this.endpoint}: ${(err as Error).message}`, 'network');
    }
  }

  /** Follows redirects that stay on the endpoint (a renamed repo); returns the first other answer. */
  private async requestFollowingRelative(access: RepoAccess, url: string, method: string, what: string): Promise<Response> {
    let current = url;
    for (let hops = 0; hops < 5; hops++) {
      const res = await this.request(access, current, { method }, what);
      const loc = res.headers.get('location');
      if (res.status < 300 || res.status > 399 || !loc) return res;
      const target = new URL(loc, current);
      if (target.origin !== new URL(this.endpoint).origin) return res;
      await res.body?.cancel();
      current = target.href;
    }
    throw new HubError(`${what}: too many redirects`, 'network');
  }

  /** The revision's commit, visibility and file list. */
  async info(access: RepoAccess, revision = 'main'): Promise<RepoInfo> {
    const { repoId } = access;
    if (!isValidRepoId(repoId)) throw new HubError(`"${repoId}" is not a valid Hub repo id`, 'invalid');
    if (!isValidRevision(revision)) throw new HubError(`"${revision}" is not a valid revision`, 'invalid');
    const what = `${repoId} (revision ${revision})`;
    const url = `${this.endpoint}/api/models/${repoId}/revision/${encodeURIComponent(revision)}`;
    const res = await this.requestFollowingRelative(access, url, 'GET', what);
    if (!res.ok) {
      await res.body?.cancel();
      throw describeStatus(res.status, what, res.headers);
    }
    const body = (await res.json().catch(() => null)) as { sha?: unknown; private?: unknown; gated?: unknown; siblings?: unknown } | null;
    const commit = typeof body?.sha === 'string' ? body.sha : '';
    if (!/^[0-9a-f]{40}$/.test(commit)) throw new HubError(`${what}: the Hub gave no commit`, 'network');
    const files = Array.isArray(body?.siblings)
      ? body.siblings.flatMap((s: unknown) => (typeof (s as { rfilename?: unknown })?.rfilename === 'string' ? [(s as { rfilename: string }).rfilename] : []))
      : [];
    return { repoId, revision, commit, private: body?.private === true, gated: Boolean(body?.gated), files };
  }

  /** What huggingface_hub's get_hf_file_metadata reads: commit, etag, size, and the download location. */
  async meta(access: RepoAccess, commit: string, file: string): Promise<FileMeta> {
    safeRelPath(file);
    const what = `${access.repoId}: ${file}`;
    const url = `${this.endpoint}/${access.repoId}/resolve/${commit}/${file.split('/').map(encodeURIComponent).join('/')}`;
    const res = await this.requestFollowingRelative(access, url, 'HEAD', what);
    await res.body?.cancel();
    if (res.status >= 400) throw describeStatus(res.status, what, res.headers);
    const linked = normalizeEtag(res.headers.get('x-linked-etag'));
    const etag = linked ?? normalizeEtag(res.headers.get('etag'));
    const sizeHeader = res.headers.get('x-linked-size') ?? res.headers.get('content-length');
    const size = sizeHeader === null ? NaN : Number(sizeHeader);
    if (!etag) throw new HubError(`${what}: the Hub sent no ETag (is HF_ENDPOINT a Hub?)`, 'network');
    if (!Number.isSafeInteger(size) || size < 0) throw new HubError(`${what}: the Hub sent no file size`, 'network');
    const loc = res.headers.get('location');
    const target = res.status >= 300 && loc ? new URL(loc, url).href : url;
    return { file, commit: res.headers.get('x-repo-commit') ?? commit, etag, size, lfs: linked !== null || /^[0-9a-f]{64}$/.test(etag), url: target };
  }

  /**
   * Makes snapshots/<commit>/<file> exist for every file: a file already linked (by us or by Python)
   * costs nothing, a finished blob is only linked, anything else is downloaded (in parallel).
   * `progress(totalBytes)` is called once the bytes to fetch are known, when there are any.
   */
  async ensureFiles(access: RepoAccess, commit: string, files: readonly string[], progress?: (totalBytes: number) => Progress): Promise<void> {
    const rc = this.repo(access.repoId);
    const missing: string[] = [];
    for (const f of files) if (!(await rc.hasSnapshotFile(commit, f))) missing.push(f);
    if (missing.length === 0) return;
    const concurrency = this.opts.concurrency ?? 8;
    const metas: FileMeta[] = [];
    await pool(missing, concurrency, async (f) => {
      metas.push(await this.meta(access, commit, f));
    });
    const todo: FileMeta[] = [];
    for (const m of metas) {
      if ((await rc.blobSize(m.etag)) === m.size) await rc.linkSnapshot(commit, m.file, m.etag);
      else todo.push(m);
    }
    if (todo.length === 0) return;
    let total = 0;
    for (const m of todo) total += m.size - ((await stat(`${rc.blobPath(m.etag)}.incomplete`).catch(() => null))?.size ?? 0);
    const bar = progress?.(Math.max(0, total));
    try {
      await pool(todo, concurrency, async (m) => {
        await this.downloadBlob(access, rc, m, bar);
        await rc.linkSnapshot(commit, m.file, m.etag);
      });
    } finally {
      bar?.finish();
    }
  }

  private downloadBlob(access: RepoAccess, rc: RepoCache, m: FileMeta, bar?: Progress): Promise<void> {
    const blob = rc.blobPath(m.etag);
    let p = this.inflight.get(blob);
    if (!p) {
      p = this.fetchToBlob(access, blob, m, bar).finally(() => this.inflight.delete(blob));
      this.inflight.set(blob, p);
    }
    return p;
  }

  private async fetchToBlob(access: RepoAccess, blob: string, m: FileMeta, bar?: Progress): Promise<void> {
    const what = `${access.repoId}: ${m.file}`;
    const partial = `${blob}.incomplete`;
    await mkdir(path.dirname(blob), { recursive: true });
    const retries = this.opts.retries ?? 5;
    let delay = this.opts.retryDelayMs ?? 500;
    for (let attempt = 0; ; attempt++) {
      let have = (await stat(partial).catch(() => null))?.size ?? 0;
      if (have > m.size) {
        await truncate(partial, 0);
        have = 0;
      }
      try {
        if (have < m.size) await this.fetchRange(access, partial, m, have, bar, what);
        break;
      } catch (err) {
        if (err instanceof HubError && err.kind !== 'network') throw err;
        if (access.signal?.aborted || attempt >= retries) {
          throw err instanceof HubError ? err : new HubError(`${what}: download interrupted: ${(err as Error).message} (run again to resume)`, 'network');
        }
        this.opts.log?.(`${what}: ${(err as Error).message}; resuming in ${delay} ms`);
        await new Promise((r) => setTimeout(r, delay));
        delay *= 2;
      }
    }
    await this.verify(partial, m, what);
    await rename(partial, blob);
  }

  /** Appends bytes [have, size) of the file to `partial`. */
  private async fetchRange(access: RepoAccess, partial: string, m: FileMeta, have: number, bar: Progress | undefined, what: string): Promise<void> {
    const res = await this.request(access, m.url, { headers: have > 0 ? { range: `bytes=${have}-` } : {} }, what);
    let start = have;
    let redirected = res;
    // A GET on the endpoint may itself redirect to the CDN (when HEAD did not).
    for (let hops = 0; redirected.status >= 300 && redirected.status <= 399 && hops < 5; hops++) {
      const loc = redirected.headers.get('location');
      await redirected.body?.cancel();
      if (!loc) throw new HubError(`${what}: redirect without a location`, 'network');
      const url = new URL(loc, m.url).href;
      redirected = await this.request(access, url, { headers: have > 0 ? { range: `bytes=${have}-` } : {} }, what);
    }
    const r = redirected;
    if (r.status === 416 && have === m.size) return;
    if (r.status >= 400) {
      await r.body?.cancel();
      throw describeStatus(r.status, what, r.headers);
    }
    if (r.status === 200 && have > 0) {
      // The server ignored Range: start over.
      await truncate(partial, 0);
      start = 0;
    } else if (r.status === 206) {
      const cr = /^bytes (\d+)-/.exec(r.headers.get('content-range') ?? '');
      if (!cr || Number(cr[1]) !== have) {
        await r.body?.cancel();
        throw new HubError(`${what}: the server resumed at the wrong offset (${r.headers.get('content-range')})`, 'network');
      }
    }
    if (!r.body) throw new HubError(`${what}: empty answer`, 'network');
    const fh = await open(partial, start === 0 ? 'w' : 'a');
    let written = start;
    try {
      for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
        if (written + chunk.byteLength > m.size) throw new HubError(`${what}: the server sent more than the ${m.size} bytes announced`, 'integrity');
        await fh.write(chunk);
        written += chunk.byteLength;
        bar?.add(chunk.byteLength);
      }
    } finally {
      await fh.close();
    }
    if (written !== m.size) throw new Error(`connection closed after ${written} of ${m.size} bytes`);
  }

  /** Checks the finished file against the Hub's etag; a mismatch deletes it so the next run starts clean. */
  private async verify(partial: string, m: FileMeta, what: string): Promise<void> {
    const isSha256 = /^[0-9a-f]{64}$/.test(m.etag);
    const isGitSha1 = /^[0-9a-f]{40}$/.test(m.etag);
    if (!isSha256 && !isGitSha1) {
      this.opts.log?.(`${what}: etag "${m.etag}" is neither a sha256 nor a git sha1; stored unchecked`);
      return;
    }
    const h = isSha256 ? createHash('sha256') : gitBlobSha1(m.size);
    for await (const chunk of createReadStream(partial, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
    const got = h.digest('hex');
    if (got !== m.etag) {
      await unlink(partial).catch(() => {});
      throw new HubError(
        `${what}: ${isSha256 ? 'sha256' : 'git sha1'} of the download is ${got} but the Hub says ${m.etag}; the corrupted file was deleted`,
        'integrity',
      );
    }
  }
}
