// The on-disk cache shared with huggingface_hub (Python): where it lives (HF_HUB_CACHE,
// HUGGINGFACE_HUB_CACHE, HF_HOME) and its layout, so a cache filled by either side serves the other:
//   <cache>/models--<org>--<name>/blobs/<etag>          file contents, named by the Hub's etag
//                                 blobs/<etag>.incomplete a download in progress (resumed by Range)
//                                 snapshots/<commit>/<path> relative symlinks to ../../blobs/<etag>
//                                 refs/<revision>          the commit a branch or tag pointed to
import { existsSync, readFileSync } from 'node:fs';
import { lstat, mkdir, readFile, readlink, rename, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';

export type Env = Readonly<Record<string, string | undefined>>;

/** A repo id: "name" or "org/name", in the characters the Hub allows. */
export const REPO_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)?$/;
/** A full commit hash (what `refs/` files hold and `snapshots/` folders are named by). */
export const COMMIT = /^[0-9a-f]{40}$/;

export function isValidRepoId(id: string): boolean {
  return REPO_ID.test(id) && !id.includes('..') && !id.includes('--') && id.length <= 96;
}

/** A branch, tag, commit or refs/pr/N; no path games (it becomes a file under refs/). */
export function isValidRevision(rev: string): boolean {
  return /^[A-Za-z0-9._/-]+$/.test(rev) && rev.length <= 256 && !rev.split('/').some((s) => s === '' || s === '.' || s === '..');
}

function truthy(v: string | undefined): boolean {
  return v !== undefined && ['1', 'on', 'yes', 'true'].includes(v.trim().toLowerCase());
}

/** huggingface_hub's HF_HOME: $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
export function hfHome(env: Env = process.env): string {
  if (env.HF_HOME) return env.HF_HOME;
  return path.join(env.XDG_CACHE_HOME || path.join(homedir(), '.cache'), 'huggingface');
}

/** The hub cache folder huggingface_hub uses: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE (legacy), or $HF_HOME/hub. */
export function hubCacheDir(env: Env = process.env): string {
  return env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE || path.join(hfHome(env), 'hub');
}

export function hubOffline(env: Env = process.env): boolean {
  return truthy(env.HF_HUB_OFFLINE);
}

/** The token huggingface_hub would send: HF_TOKEN, then the file `huggingface-cli login` writes. */
export function hubToken(env: Env = process.env): string | undefined {
  const t = env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN;
  if (t) return t.trim();
  const file = env.HF_TOKEN_PATH || path.join(hfHome(env), 'token');
  try {
    if (!existsSync(file)) return undefined;
    const v = readFileSync(file, 'utf-8').trim();
    return v || undefined;
  } catch {
    return undefined;
  }
}

/** One repo's folder in the cache. */
export class RepoCache {
  readonly dir: string;

  constructor(
    readonly cacheDir: string,
    readonly repoId: string,
  ) {
    if (!isValidRepoId(repoId)) throw new Error(`"${repoId}" is not a valid Hub repo id`);
    this.dir = path.join(cacheDir, `models--${repoId.split('/').join('--')}`);
  }

  blobPath(etag: string): string {
    if (!/^[A-Za-z0-9._-]+$/.test(etag) || etag.startsWith('.')) throw new Error(`unusable etag "${etag}" for ${this.repoId}`);
    return path.join(this.dir, 'blobs', etag);
  }

  snapshotDir(commit: string): string {
    if (!COMMIT.test(commit)) throw new Error(`"${commit}" is not a commit hash`);
    return path.join(this.dir, 'snapshots', commit);
  }

  snapshotPath(commit: string, file: string): string {
    return path.join(this.snapshotDir(commit), ...safeRelPath(file).split('/'));
  }

  /** The commit a revision names: itself when it is a full hash, else what refs/<revision> holds. */
  async resolveRef(revision: string): Promise<string | null> {
    if (COMMIT.test(revision)) return revision;
    const text = await readFile(path.join(this.dir, 'refs', ...revision.split('/')), 'utf-8').catch(() => null);
    const commit = text?.trim() ?? '';
    return COMMIT.test(commit) ? commit : null;
  }

  async writeRef(revision: string, commit: string): Promise<void> {
    if (revision === commit) return;
    const file = path.join(this.dir, 'refs', ...revision.split('/'));
    await mkdir(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, commit);
    await rename(tmp, file);
  }

  /** Size of a finished blob, or null. */
  async blobSize(etag: string): Promise<number | null> {
    const s = await stat(this.blobPath(etag)).catch(() => null);
    return s?.isFile() ? s.size : null;
  }

  /** Points snapshots/<commit>/<file> at blobs/<etag> with a relative symlink, as huggingface_hub does. */
  async linkSnapshot(commit: string, file: string, etag: string): Promise<string> {
    const link = this.snapshotPath(commit, file);
    const target = path.relative(path.dirname(link), this.blobPath(etag));
    await mkdir(path.dirname(link), { recursive: true });
    const existing = await lstat(link).catch(() => null);
    if (existing) {
      if (existing.isSymbolicLink() && (await readlink(link)) === target) return link;
      await unlink(link);
    }
    await symlink(target, link).catch(async (err: NodeJS.ErrnoException) => {
      // Another process linked it at the same moment: fine if it points at the same blob.
      if (err.code !== 'EEXIST' || (await readlink(link).catch(() => '')) !== target) throw err;
    });
    return link;
  }

  /** Whether snapshots/<commit>/<file> exists and resolves to a file. */
  async hasSnapshotFile(commit: string, file: string): Promise<boolean> {
    const s = await stat(this.snapshotPath(commit, file)).catch(() => null);
    return s?.isFile() ?? false;
  }
}

/** A repo-relative file path, refused when it could leave the snapshot folder. */
export function safeRelPath(file: string): string {
  const parts = file.split('/');
  if (file === '' || file.startsWith('/') || file.includes('\\') || parts.some((p) => p === '' || p === '.' || p === '..')) {
    throw new Error(`unsafe file name "${file}" in a Hub repo listing`);
  }
  return file;
}
