// KV cache blocks over the engine's fixed pool, with prefix caching. Each sequence owns a block
// table that grows as it generates. A full block whose K/V are computed can be committed under
// its prefix hash (prefix-cache.ts); a later sequence with the same hash chain then takes it
// into its table instead of recomputing it. Blocks are reference-counted: a committed block that
// no sequence holds stays cached, idle, until a fresh block is needed and none is free; idle
// blocks are then reclaimed least recently released first. Only full blocks are ever shared and
// nobody writes into a full block, so sharing needs no copy-on-write.
export class BlockManager {
  /** Blocks that hold nothing worth keeping. */
  private readonly freeList: number[];
  /** Sequences holding each block. */
  private readonly refs: Uint32Array;
  /** The prefix hash a block is committed under, if any. */
  private readonly hashOf: (string | undefined)[];
  private readonly byHash = new Map<string, number>();
  /** Committed blocks no sequence holds, least recently released first (Map keeps insertion order). */
  private readonly idle = new Map<number, true>();
  /** Committed blocks reclaimed for other use, since start. */
  evictions = 0;

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
  ) {
    if (!Number.isInteger(numBlocks) || numBlocks <= 0) throw new Error('numBlocks must be a positive integer');
    if (!Number.isInteger(blockSize) || blockSize <= 0) throw new Error('blockSize must be a positive integer');
    // Lowest ids first, so a fresh server fills the cache from the start.
    this.freeList = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
    this.refs = new Uint32Array(numBlocks);
    this.hashOf = new Array<string | undefined>(numBlocks);
  }

  /** Blocks a sequence can take now: never used or released, plus idle cached ones. */
  get free(): number {
    return this.freeList.length + this.idle.size;
  }

  /** Blocks held by at least one sequence. */
  get used(): number {
    return this.numBlocks - this.free;
  }

  /** Committed blocks, held or idle. */
  get cached(): number {
    return this.byHash.size;
  }

  /** Committed blocks that no sequence holds (the first to go when blocks run out). */
  get idleCached(): number {
    return this.idle.size;
  }

  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.blockSize);
  }

  /** Grows `table` to cover `tokens` positions; false (and nothing taken) when the pool is short. */
  ensure(table: number[], tokens: number): boolean {
    const need = this.blocksFor(tokens) - table.length;
    if (need <= 0) return true;
    if (need > this.free) return false;
    for (let i = 0; i < need; i++) table.push(this.take());
    return true;
  }

  /**
   * The committed blocks of the longest prefix of `hashes` that is cached, in order. Nothing is
   * taken: pass them to `ensureWithPrefix`.
   */
  match(hashes: readonly string[], max = hashes.length): number[] {
    const out: number[] = [];
    for (let i = 0; i < max && i < hashes.length; i++) {
      const b = this.byHash.get(hashes[i]!);
      if (b === undefined) break;
      out.push(b);
    }
    return out;
  }

  /**
   * Starts an empty `table` with the cached `prefix` blocks (from `match`), then grows it to
   * `tokens` positions with fresh blocks. False, and nothing taken, when the pool is short.
   */
  ensureWithPrefix(table: number[], prefix: readonly number[], tokens: number): boolean {
    if (table.length !== 0) throw new Error('ensureWithPrefix starts a table');
    const fresh = this.blocksFor(tokens) - prefix.length;
    let reclaimable = this.free;
    // An idle prefix block stops counting as free once this table holds it.
    for (const b of prefix) if (this.refs[b] === 0) reclaimable--;
    if (fresh > reclaimable) return false;
    for (const b of prefix) {
      if (this.refs[b]++ === 0) this.idle.delete(b);
      table.push(b);
    }
    return this.ensure(table, tokens);
  }

  /**
   * Commits the full, computed `block` under `hash`. When another block already holds that
   * hash (two sequences computed the same prefix at once), the first one stays the cached one
   * and this block remains private to its sequence.
   */
  commit(block: number, hash: string): void {
    if (this.refs[block] === 0) throw new Error(`commit of block ${block}, which no sequence holds`);
    if (this.hashOf[block] !== undefined || this.byHash.has(hash)) return;
    this.hashOf[block] = hash;
    this.byHash.set(hash, block);
  }

  /** Drops the hold of `table` on each of its blocks and empties it. */
  release(table: number[]): void {
    // Last block first: a sequence's tail is then reclaimed before its head, which other
    // prompts are likelier to share (and which the tail is useless without).
    for (let i = table.length - 1; i >= 0; i--) {
      const b = table[i]!;
      if (this.refs[b] === 0) throw new Error(`block ${b} released twice`);
      if (--this.refs[b]! > 0) continue;
      if (this.hashOf[b] !== undefined) this.idle.set(b, true);
      else this.freeList.push(b);
    }
    table.length = 0;
  }

  /** A block for one sequence: a free one, else the least recently released idle cached one. */
  private take(): number {
    let b = this.freeList.pop();
    if (b === undefined) {
      b = this.idle.keys().next().value as number;
      this.idle.delete(b);
      this.byHash.delete(this.hashOf[b]!);
      this.hashOf[b] = undefined;
      this.evictions++;
    }
    this.refs[b] = 1;
    return b;
  }
}
