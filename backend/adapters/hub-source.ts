// `adapter_source: "hub"`: the Hugging Face Hub HTTP protocol against HF_ENDPOINT. Files land in
// a disk cache laid out per repo and resolved commit, so a second load reads the disk only.
// A private repo's files are cached under a digest of the token that fetched them, so a request
// with another token (or none) must prove access to the hub itself.
import { createHash } from 'node:crypto';
import { mkdir, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ADAPTER_FILES } from '../../protocol/index.ts';
import { AdapterError, type AdapterRef, type AdapterSource } from './source.ts';

const REPO_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)?$/;

export interface HubSourceOptions {
  endpoint: string;
  cacheDir: string;
  /** Token used when a request brings none (HF_TOKEN): set only when the operator opts in (--allow-hub-token-fallback). */
  defaultToken?: string;
  fetchImpl?: typeof fetch;
}

export class HubSource implements AdapterSource {
  private readonly inflight = new Map<string, Promise<string>>();

  constructor(private readonly opts: HubSourceOptions) {}

  fetch(ref: AdapterRef, signal?: AbortSignal): Promise<string> {
    if (!REPO_ID.test(ref.id) || ref.id.includes('..')) throw new AdapterError(`"${ref.id}" is not a valid hub repo id`);
    const revision = ref.revision ?? 'main';
    if (!/^[A-Za-z0-9._/-]+$/.test(revision) || revision.includes('..')) throw new AdapterError(`"${revision}" is not a valid revision`);
    const token = ref.apiToken ?? this.opts.defaultToken;
    const key = `${ref.id}@${revision}#${token ? digest(token) : ''}`;
    let p = this.inflight.get(key);
    if (!p) {
      p = this.download(ref.id, revision, token, signal).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  private async download(repo: string, revision: string, token: string | undefined, signal?: AbortSignal): Promise<string> {
    const f = this.opts.fetchImpl ?? fetch;
    const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
    const base = this.opts.endpoint.replace(/\/+$/, '');
    // The revision API resolves a branch or tag to a commit and says whether the repo is private.
    const infoUrl = `${base}/api/models/${repo}/revision/${encodeURIComponent(revision)}`;
    const res = await f(infoUrl, { headers, signal }).catch((e: Error) => {
      throw new AdapterError(`cannot reach the hub at ${base}: ${e.message}`, 422);
    });
    if (res.status === 401 || res.status === 403) throw refused(repo);
    if (res.status === 404) throw new AdapterError(`adapter "${repo}" (revision ${revision}) not found on the hub`, 404);
    if (!res.ok) throw new AdapterError(`hub answered ${res.status} for adapter "${repo}"`, 422);
    const info = (await res.json()) as { sha?: string; private?: boolean; gated?: unknown; siblings?: { rfilename: string }[] };
    const sha = typeof info.sha === 'string' && /^[0-9a-f]{7,64}$/.test(info.sha) ? info.sha : null;
    if (!sha) throw new AdapterError(`hub gave no commit for adapter "${repo}"`, 422);
    const names = new Set((info.siblings ?? []).map((s) => s.rfilename));
    for (const file of ADAPTER_FILES) {
      if (info.siblings && !names.has(file)) throw new AdapterError(`adapter "${repo}" has no ${file} (only PEFT safetensors adapters are served)`, 422);
    }
    // Public repos share one cache entry; private ones are keyed by the token that could read them.
    const scope = info.private || info.gated ? `private-${token ? digest(token) : 'anonymous'}` : 'public';
    const dir = path.join(this.opts.cacheDir, `models--${repo.replace('/', '--')}`, scope, sha);
    if (await complete(dir)) return dir;
    await mkdir(dir, { recursive: true });
    for (const file of ADAPTER_FILES) {
      const url = `${base}/${repo}/resolve/${sha}/${file}`;
      const r = await f(url, { headers, signal });
      if (r.status === 401 || r.status === 403) throw refused(repo);
      if (!r.ok) throw new AdapterError(`downloading ${file} of adapter "${repo}" failed: hub answered ${r.status}`, 422);
      const tmp = path.join(dir, `.${file}.${process.pid}.partial`);
      await writeFile(tmp, new Uint8Array(await r.arrayBuffer()));
      await rename(tmp, path.join(dir, file)); // readers never see half a file
    }
    return dir;
  }
}

/**
 * The hub would not let this request's token (or no token) read the repo: the caller's problem
 * with its own adapter, answered as a 403 naming the adapter (the gateway passes it on as such;
 * its service token is never refused with 403, only with 401).
 */
function refused(repo: string): AdapterError {
  return new AdapterError(`the hub refused access to adapter "${repo}": its hub token is missing, wrong or lacks access to the repo`, 403);
}

function digest(token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 16);
}

async function complete(dir: string): Promise<boolean> {
  for (const f of ADAPTER_FILES) if (!(await stat(path.join(dir, f)).catch(() => null))) return false;
  return true;
}
