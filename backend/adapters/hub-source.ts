// `adapter_source: "hub"`: the Hugging Face Hub HTTP protocol against HF_ENDPOINT, through the
// client the base model uses (backend/hub), into the same huggingface_hub cache layout, so a
// second load reads the disk only and a cache filled by Python tools serves too.
// Files are shared across tokens, but every fetch first proves access to the hub with the
// request's own token (the revision API), so a private adapter is only served to a request the
// hub let read it. Offline (HF_HUB_OFFLINE), only repos last seen public are served from the cache.
import { createHash } from 'node:crypto';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ADAPTER_FILES } from '../../protocol/index.ts';
import { ADAPTER_PICKLE_FILE } from '../../native/peft-adapter.ts';
import { HubClient, HubError } from '../hub/hub-client.ts';
import { AdapterError, type AdapterRef, type AdapterSource } from './source.ts';

const REPO_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)?$/;

export interface HubSourceOptions {
  endpoint: string;
  cacheDir: string;
  /** Token used when a request brings none (HF_TOKEN): set only when the operator opts in (--allow-hub-token-fallback). */
  defaultToken?: string;
  fetchImpl?: typeof fetch;
  /** HF_HUB_OFFLINE: never call the hub; serve public repos already in the cache. */
  offline?: boolean;
}

export class HubSource implements AdapterSource {
  private readonly inflight = new Map<string, Promise<string>>();

  private readonly client: HubClient;

  constructor(private readonly opts: HubSourceOptions) {
    this.client = new HubClient({ endpoint: opts.endpoint, cacheDir: opts.cacheDir, ...(opts.fetchImpl ? { fetchImpl: opts.fetchImpl } : {}) });
  }

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
    const rc = this.client.repo(repo);
    if (this.opts.offline) return this.fromCache(repo, revision);
    const access = { repoId: repo, token, signal };
    // The revision API resolves a branch or tag to a commit, says whether the repo is private, and
    // is where this request's token is checked, every time, before the shared cache serves it.
    let info;
    try {
      info = await this.client.info(access, revision);
    } catch (err) {
      // A hub that cannot be reached: what the cache holds of a public repo still serves (as
      // huggingface_hub falls back); a private one's access cannot be checked, so it does not.
      if (err instanceof HubError && err.kind === 'network') {
        const cached = await this.fromCache(repo, revision).catch(() => null);
        if (cached) return cached;
      }
      throw hubFailure(err, repo, revision);
    }
    const names = new Set(info.files);
    // PEFT's safetensors file, else its older adapter_model.bin (read without running the pickle).
    const weights = names.has(ADAPTER_FILES[1]) || !names.has(ADAPTER_PICKLE_FILE) ? ADAPTER_FILES[1] : ADAPTER_PICKLE_FILE;
    for (const file of [ADAPTER_FILES[0], weights]) {
      if (info.files.length > 0 && !names.has(file)) throw new AdapterError(`adapter "${repo}" has no ${file} (only PEFT LoRA adapters are served)`, 422);
    }
    await this.client.ensureFiles(access, info.commit, [ADAPTER_FILES[0], weights]).catch((err: unknown) => {
      throw hubFailure(err, repo, revision);
    });
    await rc.writeRef(revision, info.commit);
    await (info.private || info.gated ? forgetPublic(rc.dir) : markPublic(rc.dir));
    return rc.snapshotDir(info.commit);
  }

  private async fromCache(repo: string, revision: string): Promise<string> {
    const rc = this.client.repo(repo);
    const commit = await rc.resolveRef(revision);
    const found = commit !== null && (await rc.hasSnapshotFile(commit, ADAPTER_FILES[0]));
    if (!found) throw new AdapterError(`adapter "${repo}" (revision ${revision}) is not in the hub cache, and HF_HUB_OFFLINE forbids downloading it`, 404);
    // Access to a private repo cannot be checked offline: only repos seen public are served.
    if (!(await stat(publicMarker(rc.dir)).catch(() => null))) {
      throw new AdapterError(`adapter "${repo}" is private (or was not fetched by this server) and its access cannot be checked with HF_HUB_OFFLINE`, 403);
    }
    return rc.snapshotDir(commit);
  }
}

/** Maps the hub client's failures to the adapter API's errors. */
function hubFailure(err: unknown, repo: string, revision: string): Error {
  if (!(err instanceof HubError)) return err as Error;
  switch (err.kind) {
    case 'auth':
      return refused(repo);
    case 'not-found':
      return new AdapterError(`adapter "${repo}" (revision ${revision}) not found on the hub`, 404);
    case 'invalid':
      return new AdapterError(err.message, 400);
    default:
      return new AdapterError(`adapter "${repo}": ${err.message}`, 422);
  }
}

/**
 * "Last seen public" is kept beside huggingface_hub's lock files (a folder its cache scan skips),
 * so the cache layout itself stays exactly huggingface_hub's. Losing it only makes offline refuse.
 */
function publicMarker(repoDir: string): string {
  return path.join(path.dirname(repoDir), '.locks', path.basename(repoDir), 'switchboard-public');
}

async function markPublic(repoDir: string): Promise<void> {
  const m = publicMarker(repoDir);
  await mkdir(path.dirname(m), { recursive: true });
  await writeFile(m, '');
}

async function forgetPublic(repoDir: string): Promise<void> {
  await rm(publicMarker(repoDir), { force: true });
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
