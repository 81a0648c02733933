// Identities of KV cache blocks for prefix caching. A full block's K/V depend on every token up to
// its end and on the weights that produced them (base model, or base + one adapter), so a block's
// hash chains its parent's hash, its own token ids, and, at the root, the adapter's store key
// (source, path with the tenant, file version; or the whole merge spec) and a cache salt (the
// caller's tenant). Two requests share a block only when all of these agree: never across
// adapters, adapter versions or tenants. SHA-256, so no one can craft a prompt whose block
// collides with another tenant's.
import { createHash } from 'node:crypto';

/** Where a sequence's chain starts: who computed the K/V, and with what weights. */
export function rootHash(adapterKey: string | null, salt: string | null): string {
  return createHash('sha256')
    .update(JSON.stringify(['switchboard-prefix-v1', adapterKey, salt]))
    .digest('base64');
}

/** The hash of the block holding `tokens[start, end)`, whose predecessor hashed to `parent`. */
export function blockHash(parent: string, tokens: readonly number[], start: number, end: number): string {
  const ids = Int32Array.from(tokens.slice(start, end));
  return createHash('sha256').update(parent).update(new Uint8Array(ids.buffer)).digest('base64');
}

/**
 * A sequence's block hashes, extended as its tokens grow (tokens only ever get appended, so the
 * hashes already made stay right).
 */
export class BlockHashes {
  private readonly hashes: string[] = [];

  constructor(
    private readonly root: string,
    private readonly blockSize: number,
  ) {}

  /** Hashes of the first `n` blocks of `tokens` (each must be full). */
  upTo(tokens: readonly number[], n: number): readonly string[] {
    if (n * this.blockSize > tokens.length) throw new Error('only full blocks have a hash');
    const bs = this.blockSize;
    for (let i = this.hashes.length; i < n; i++) {
      this.hashes.push(blockHash(i === 0 ? this.root : this.hashes[i - 1]!, tokens, i * bs, (i + 1) * bs));
    }
    return this.hashes;
  }
}
