// `adapter_source: "local"`: the id is a directory on the server, either absolute or relative to
// the configured adapter root. Relative ids may not climb out of the root.
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { AdapterError, type AdapterRef, type AdapterSource } from './source.ts';

export class LocalSource implements AdapterSource {
  constructor(private readonly root: string | null) {}

  async fetch(ref: AdapterRef): Promise<string> {
    let dir: string;
    if (path.isAbsolute(ref.id)) {
      dir = ref.id;
    } else {
      if (!this.root) throw new AdapterError(`local adapter "${ref.id}" must be an absolute path (no --adapter-root is set)`);
      dir = path.resolve(this.root, ref.id);
      const rel = path.relative(this.root, dir);
      if (rel.startsWith('..') || path.isAbsolute(rel)) throw new AdapterError(`local adapter "${ref.id}" is outside the adapter root`);
    }
    const st = await stat(dir).catch(() => null);
    if (!st?.isDirectory()) throw new AdapterError(`adapter "${ref.id}" not found`, 404);
    return dir;
  }
}
