// `--model-id` as LoRAX takes it: a local directory, a Hub repo id, or `id@revision`. A repo is
// resolved to a snapshot folder of the shared cache holding what the engine and tokenizer read:
// configs and tokenizer files first (they say which weight shards exist), then the weights, all
// in parallel. With HF_HUB_OFFLINE=1, or when the Hub cannot be reached, the cache alone serves.
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { COMMIT, hubCacheDir, hubToken, isValidRepoId, isValidRevision, type Env } from './hub-cache.ts';
import { HubClient, HubError, type HubClientOptions } from './hub-client.ts';
import { Progress, type ProgressSink } from './progress.ts';

/** Small files read at start-up, fetched when the repo has them. */
export const MODEL_SMALL_FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'chat_template.jinja',
  'model.safetensors.index.json',
];
const INDEX = 'model.safetensors.index.json';

export interface ModelResolveOptions extends HubClientOptions {
  /** Revision when the id carries none (--revision); default "main". */
  revision?: string | undefined;
  token?: string | undefined;
  offline?: boolean;
  /** Where the progress bar goes (default stderr). */
  progressSink?: ProgressSink;
  signal?: AbortSignal;
}

export interface ResolvedModel {
  /** The directory to open: the local one, or the snapshot folder. */
  dir: string;
  /** Set when the model came from the Hub (or its cache). */
  hub?: { repoId: string; revision: string; commit: string; fromCache: boolean };
}

/** Splits "org/name@rev"; a revision in the id wins over --revision only when --revision is unset. */
export function parseModelId(modelId: string, revision?: string): { repoId: string; revision: string } {
  const at = modelId.indexOf('@');
  const repoId = at < 0 ? modelId : modelId.slice(0, at);
  const inId = at < 0 ? undefined : modelId.slice(at + 1);
  if (inId !== undefined && revision !== undefined && inId !== revision) {
    throw new HubError(`--model-id ${modelId} names revision ${inId} but --revision says ${revision}`, 'invalid');
  }
  const rev = inId ?? revision ?? 'main';
  if (!isValidRepoId(repoId)) throw new HubError(`--model-id "${modelId}" is neither an existing directory nor a Hub repo id (org/name)`, 'invalid');
  if (!isValidRevision(rev)) throw new HubError(`"${rev}" is not a valid revision`, 'invalid');
  return { repoId, revision: rev };
}

async function isDir(p: string): Promise<boolean> {
  return (await stat(p).catch(() => null))?.isDirectory() ?? false;
}

/** Which weight files a repo listing calls for; refuses a repo without safetensors, naming what it has. */
export function pickWeightFiles(repoId: string, files: readonly string[], index: { weight_map?: Record<string, string> } | null): string[] {
  const top = files.filter((f) => !f.includes('/'));
  if (index?.weight_map) {
    const shards = [...new Set(Object.values(index.weight_map))];
    const absent = shards.filter((s) => !files.includes(s));
    if (absent.length > 0) throw new HubError(`${repoId}: ${INDEX} names ${absent.join(', ')}, which the repo lacks`, 'refused');
    return shards;
  }
  const st = top.filter((f) => f.endsWith('.safetensors'));
  if (st.length > 0) return st.includes('model.safetensors') ? ['model.safetensors'] : st;
  const other = files.filter((f) => /\.(bin|pt|pth|ckpt|gguf|h5|msgpack|onnx)$/.test(f));
  const found = other.length > 0 ? `; it has ${other.slice(0, 5).join(', ')}${other.length > 5 ? ', ...' : ''}` : '';
  throw new HubError(
    `${repoId} has no safetensors weights${found}. Switchboard loads only safetensors (pickle checkpoints can run code when loaded); ` +
      `pick a repo or revision with *.safetensors, or convert one (e.g. the Hub's "convert to safetensors" space)`,
    'refused',
  );
}

/** A cached snapshot usable without the Hub: config.json and every weight file present. */
async function cachedSnapshot(client: HubClient, repoId: string, revision: string): Promise<{ dir: string; commit: string } | null> {
  const rc = client.repo(repoId);
  const commit = await rc.resolveRef(revision);
  if (!commit) return null;
  const dir = rc.snapshotDir(commit);
  if (!(await rc.hasSnapshotFile(commit, 'config.json'))) return null;
  const names = await readdir(dir).catch(() => [] as string[]);
  let weights = names.filter((f) => f.endsWith('.safetensors'));
  if (names.includes(INDEX)) {
    const idx = JSON.parse(await readFile(path.join(dir, INDEX), 'utf-8').catch(() => '{}')) as { weight_map?: Record<string, string> };
    weights = [...new Set(Object.values(idx.weight_map ?? {}))];
  }
  if (weights.length === 0) return null;
  for (const w of weights) if (!(await rc.hasSnapshotFile(commit, w))) return null;
  return { dir, commit };
}

/**
 * Turns --model-id into a directory. A path that exists is used as is; anything else must be a
 * Hub repo id, downloaded (or found) in the cache.
 */
export async function resolveModel(modelId: string, opts: ModelResolveOptions, log: (msg: string) => void = () => {}): Promise<ResolvedModel> {
  if (await isDir(modelId)) return { dir: path.resolve(modelId) };
  if (modelId.startsWith('/') || modelId.startsWith('.') || modelId.startsWith('~')) {
    throw new HubError(`--model-id ${modelId}: no such directory`, 'not-found');
  }
  const { repoId, revision } = parseModelId(modelId, opts.revision);
  const client = new HubClient({ ...opts, log: opts.log ?? log });
  const access = { repoId, token: opts.token, signal: opts.signal };
  const where = `${repoId}@${revision}`;
  if (opts.offline) {
    const snap = await cachedSnapshot(client, repoId, revision);
    if (!snap) {
      throw new HubError(`HF_HUB_OFFLINE is set and ${where} is not complete in the cache at ${opts.cacheDir} (download it once with --download-only)`, 'offline');
    }
    log(`${where}: offline, using cached commit ${snap.commit}`);
    return { dir: snap.dir, hub: { repoId, revision, commit: snap.commit, fromCache: true } };
  }
  let info;
  try {
    info = await client.info(access, revision);
  } catch (err) {
    // As huggingface_hub does: a Hub that cannot be reached falls back to what the cache holds.
    if (err instanceof HubError && err.kind === 'network') {
      const snap = await cachedSnapshot(client, repoId, revision);
      if (snap) {
        log(`${err.message}; using cached commit ${snap.commit} of ${where}`);
        return { dir: snap.dir, hub: { repoId, revision, commit: snap.commit, fromCache: true } };
      }
    }
    // A mistyped relative path looks like a repo id: say both were tried.
    if (err instanceof HubError && err.kind === 'not-found') {
      throw new HubError(`--model-id ${modelId}: no such directory here, and ${err.message} on the Hub at ${client.endpoint}`, 'not-found');
    }
    throw err;
  }
  const rc = client.repo(repoId);
  if (!info.files.includes('config.json')) throw new HubError(`${where} has no config.json: not a transformers model repo`, 'refused');
  // Refuse a pickle-only repo before fetching anything.
  if (!info.files.includes(INDEX)) pickWeightFiles(repoId, info.files, null);
  const small = MODEL_SMALL_FILES.filter((f) => info.files.includes(f));
  const bar = (label: string) => (total: number) => new Progress({ label, total, ...(opts.progressSink ? { sink: opts.progressSink } : {}) });
  await client.ensureFiles(access, info.commit, small, bar(`downloading ${repoId} (configs)`));
  let index: { weight_map?: Record<string, string> } | null = null;
  if (small.includes(INDEX)) {
    try {
      index = JSON.parse(await readFile(rc.snapshotPath(info.commit, INDEX), 'utf-8')) as { weight_map?: Record<string, string> };
    } catch (err) {
      throw new HubError(`${where}: ${INDEX} is not valid JSON: ${(err as Error).message}`, 'refused');
    }
  }
  const weights = pickWeightFiles(repoId, info.files, index);
  await client.ensureFiles(access, info.commit, weights, bar(`downloading ${repoId}`));
  if (!COMMIT.test(revision) || revision !== info.commit) await rc.writeRef(revision, info.commit);
  return { dir: rc.snapshotDir(info.commit), hub: { repoId, revision, commit: info.commit, fromCache: false } };
}

/** The serve options that decide where --model-id comes from (a slice of ServeConfig). */
export interface ModelHubSettings {
  modelId: string;
  revision?: string | undefined;
  hubEndpoint: string;
  hubToken?: string | undefined;
  adapterCacheDir?: string | undefined;
  hubOffline: boolean;
  /** JSON log lines: progress goes through `log` as lines, never as a redrawn bar. */
  json?: boolean;
}

/** resolveModel with the server's settings; the operator's token (HF_TOKEN or the login file) is for the model. */
export function resolveServedModel(s: ModelHubSettings, log: (msg: string) => void = () => {}, env: Env = process.env): Promise<ResolvedModel> {
  return resolveModel(
    s.modelId,
    {
      endpoint: s.hubEndpoint,
      cacheDir: s.adapterCacheDir ?? hubCacheDir(env),
      revision: s.revision,
      token: s.hubToken ?? hubToken(env),
      offline: s.hubOffline,
      log,
      // A bar on a terminal; elsewhere (or with JSON logs) plain lines through the server's logger.
      ...(process.stderr.isTTY && !s.json ? {} : { progressSink: { isTTY: false, write: (t: string) => log(t.trimEnd()) } }),
    },
    log,
  );
}
