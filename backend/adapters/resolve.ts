// From what a request names (adapter_id + adapter_source + api_token, or merged_adapters) to a
// key in the adapter store, loading whatever is not prepared yet. Keys encode everything that
// makes two adapters different, and nothing else, so equal requests share one slot.
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { ADAPTER_FILES } from '../../protocol/index.ts';
import type { ModelDir } from '../../native/model-dir.ts';
import { openPeftAdapter } from '../../native/peft-adapter.ts';
import type { AdapterStore } from './adapter-store.ts';
import { mergeAdapters, type MergeStrategy } from './merge.ts';
import { AdapterError, type AdapterRef, type AdapterSource, type AdapterSourceName } from './source.ts';

export type AdapterChoice =
  | { kind: 'base' }
  | { kind: 'single'; ref: AdapterRef }
  | {
      kind: 'merged';
      refs: AdapterRef[];
      weights: number[];
      strategy: MergeStrategy;
      density: number;
      majoritySignMethod: 'total' | 'frequency';
    };

export class AdapterResolver {
  constructor(
    private readonly store: AdapterStore,
    private readonly sources: Partial<Record<AdapterSourceName, AdapterSource>>,
    private readonly model: ModelDir,
  ) {}

  /** Prepares the adapter and returns its store key (null for the base model). Call release(key) after. */
  async acquire(choice: AdapterChoice, signal?: AbortSignal): Promise<string | null> {
    if (choice.kind === 'base') return null;
    if (choice.kind === 'single') {
      const dir = await this.fetch(choice.ref, signal);
      const key = `${choice.ref.source}:${dir}@${await version(dir)}`;
      await this.store.prepare(key, async () => {
        const adapter = await this.validated(dir, choice.ref.id);
        return { spec: adapter.spec, info: { id: choice.ref.id, source: choice.ref.source, rank: adapter.config.r } };
      });
      return key;
    }
    const dirs = await Promise.all(choice.refs.map((r) => this.fetch(r, signal)));
    const versions = await Promise.all(dirs.map(version));
    const key = `merge:${JSON.stringify([dirs, versions, choice.weights, choice.strategy, choice.density, choice.majoritySignMethod])}`;
    await this.store.prepare(key, async () => {
      const parts = await Promise.all(dirs.map(async (d, i) => ({ ...(await this.validated(d, choice.refs[i]!.id)), name: choice.refs[i]!.id })));
      const spec = await mergeAdapters(parts, choice.weights, choice.strategy, choice.density, choice.majoritySignMethod);
      return { spec, info: { id: choice.refs.map((r) => r.id).join('+'), merge: choice.strategy } };
    });
    return key;
  }

  release(key: string | null): void {
    if (key !== null) this.store.release(key);
  }

  private async fetch(ref: AdapterRef, signal?: AbortSignal): Promise<string> {
    const source = this.sources[ref.source];
    if (!source) throw new AdapterError(`adapter_source "${ref.source}" is not enabled on this server`);
    return source.fetch(ref, signal);
  }

  private async validated(dir: string, id: string) {
    try {
      return await openPeftAdapter(dir, this.model);
    } catch (err) {
      // Anything wrong with the files is the adapter's fault, not the server's.
      // Name the adapter as the client did, not by a path on this server.
      throw new AdapterError(`adapter "${id}": ${(err as Error).message.replaceAll(dir, id)}`, 422);
    }
  }
}

/** Changes whenever the adapter's files are replaced, so a re-uploaded adapter gets a fresh key. */
async function version(dir: string): Promise<string> {
  const parts = await Promise.all(
    ADAPTER_FILES.map((f) =>
      stat(path.join(dir, f)).then((s) => `${s.size}.${s.mtimeMs}`, () => 'missing'),
    ),
  );
  return parts.join('/');
}
