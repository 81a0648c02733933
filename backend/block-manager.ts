// KV cache blocks: a free list over the engine's fixed pool. Each sequence owns a block table
// that grows as it generates; blocks return to the pool when it finishes, fails, is cancelled
// or is preempted.
export class BlockManager {
  private readonly freeList: number[];

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
  ) {
    if (!Number.isInteger(numBlocks) || numBlocks <= 0) throw new Error('numBlocks must be a positive integer');
    if (!Number.isInteger(blockSize) || blockSize <= 0) throw new Error('blockSize must be a positive integer');
    // Lowest ids first, so a fresh server fills the cache from the start.
    this.freeList = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  get free(): number {
    return this.freeList.length;
  }

  get used(): number {
    return this.numBlocks - this.freeList.length;
  }

  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.blockSize);
  }

  /** Grows `table` to cover `tokens` positions; false (and nothing taken) when the pool is short. */
  ensure(table: number[], tokens: number): boolean {
    const need = this.blocksFor(tokens) - table.length;
    if (need <= 0) return true;
    if (need > this.freeList.length) return false;
    for (let i = 0; i < need; i++) table.push(this.freeList.pop()!);
    return true;
  }

  /** Returns every block of `table` to the pool and empties it. */
  release(table: number[]): void {
    for (let i = table.length - 1; i >= 0; i--) this.freeList.push(table[i]!);
    table.length = 0;
  }
}
