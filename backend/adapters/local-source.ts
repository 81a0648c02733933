// `adapter_source: "local"`: the id is a directory under the configured adapter root, written in
// its canonical spelling (protocol/adapter-id.ts). Absolute paths anywhere on disk only when the
// operator allows them (--allow-absolute-adapter-paths), and never into the tenants' directory.
// Every refusal reads exactly like a missing adapter, so nothing about the disk can be probed.
import { realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { checkLocalAdapterId } from '../../protocol/adapter-id.ts';
import { TENANTS_DIR } from '../../protocol/index.ts';
import { AdapterError, type AdapterRef, type AdapterSource } from './source.ts';

export interface LocalSourceOptions {
  /** Accept absolute ids (outside the tenants' directory). */
  allowAbsolute?: boolean;
}

/** The one answer for a local id that cannot be served, whatever the reason. */
export function localNotFound(id: string): AdapterError {
  return new AdapterError(`adapter "${id}" not found`, 404);
}

function inside(parent: string, child: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

export class LocalSource implements AdapterSource {
  constructor(
    private readonly root: string | null,
    private readonly opts: LocalSourceOptions = {},
  ) {}

  async fetch(ref: AdapterRef): Promise<string> {
    const id = checkLocalAdapterId(ref.id);
    if (!id.ok) throw localNotFound(ref.id);
    let dir: string;
    if (id.kind === 'absolute') {
      if (!this.opts.allowAbsolute) throw localNotFound(ref.id);
      dir = ref.id;
      // Tenant uploads are reachable only as tenants/<t>/<name>, where the owner is checked.
      if (this.root) {
        const tenants = await realpath(path.join(this.root, TENANTS_DIR)).catch(() => path.join(this.root!, TENANTS_DIR));
        const real = await realpath(dir).catch(() => dir);
        if (inside(tenants, real) || inside(path.join(this.root, TENANTS_DIR), dir)) throw localNotFound(ref.id);
      }
    } else {
      if (!this.root) throw localNotFound(ref.id);
      dir = path.join(this.root, ...id.segments);
    }
    // A directory without an adapter config is no adapter either (and "/etc" must not answer
    // "/etc/adapter_config.json: not found", which would tell what exists on the disk).
    const st = await stat(path.join(dir, 'adapter_config.json')).catch(() => null);
    if (!st?.isFile()) throw localNotFound(ref.id);
    return dir;
  }
}
