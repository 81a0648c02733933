// A model's vocabulary as the mask computation needs it: token byte strings in a trie laid out
// in pre-order in flat arrays, so that one pass over the trie from a grammar state decides every
// token, and a byte the grammar rejects skips the whole subtree of tokens that share the prefix.

export class TokenTrie {
  /** Node count; node 0 is the root (empty prefix). */
  readonly size: number;
  /** Byte on the edge into node i. */
  readonly byte: Uint8Array;
  /** Depth of node i (root 0) = its prefix length. */
  readonly depth: Uint16Array;
  /** First node after node i's subtree. */
  readonly next: Int32Array;
  /** Token ids ending at node i: tokIds[tokStart[i] .. tokStart[i+1]). */
  readonly tokStart: Int32Array;
  readonly tokIds: Int32Array;
  readonly maxDepth: number;

  constructor(tokens: readonly (Uint8Array | null)[]) {
    const ids: number[] = [];
    for (let id = 0; id < tokens.length; id++) {
      const t = tokens[id];
      if (t && t.length > 0) ids.push(id);
    }
    const buf = (id: number) => Buffer.from(tokens[id]!.buffer, tokens[id]!.byteOffset, tokens[id]!.length);
    ids.sort((a, b) => Buffer.compare(buf(a), buf(b)) || a - b);
    // Upper bound on nodes: total bytes + root.
    let total = 1;
    for (const id of ids) total += tokens[id]!.length;
    const byte = new Uint8Array(total);
    const depth = new Uint16Array(total);
    const next = new Int32Array(total);
    const tokStart = new Int32Array(total + 1);
    const tokIds = new Int32Array(ids.length);
    let n = 1;
    let nt = 0;
    const stack: number[] = [0]; // stack[d] = node at depth d on the current path
    let prev: Uint8Array | null = null;
    let maxDepth = 0;
    for (const id of ids) {
      const t = tokens[id]!;
      let lcp = 0;
      if (prev) while (lcp < t.length && lcp < prev.length && t[lcp] === prev[lcp]) lcp++;
      while (stack.length - 1 > lcp) next[stack.pop()!] = n;
      for (let d = lcp; d < t.length; d++) {
        byte[n] = t[d]!;
        depth[n] = d + 1;
        tokStart[n] = nt;
        stack.push(n);
        n++;
      }
      tokIds[nt++] = id;
      maxDepth = Math.max(maxDepth, t.length);
      prev = t;
    }
    while (stack.length) next[stack.pop()!] = n;
    tokStart[n] = nt;
    // Nodes created after the last token attached to node i start at tokStart[i+1]; fix the
    // starts of nodes that got no token (their range must be empty): tokStart must be monotone.
    for (let i = n - 1; i >= 1; i--) if (tokStart[i]! > tokStart[i + 1]!) tokStart[i] = tokStart[i + 1]!;
    this.size = n;
    this.byte = byte.slice(0, n);
    this.depth = depth.slice(0, n);
    this.next = next.slice(0, n);
    this.tokStart = tokStart.slice(0, n + 1);
    this.tokIds = tokIds;
    this.maxDepth = maxDepth;
  }
}

/** Everything mask computation needs about one model's tokenizer. */
export class Vocab {
  readonly trie: TokenTrie;
  /** Words of the mask bitset: ceil(modelVocabSize / 32). */
  readonly words: number;
  /** Longest token in bytes (the mask-sharing horizon of compiled grammars). */
  readonly maxTokenBytes: number;
  readonly eosMask: Uint32Array;
  /**
   * 1 for each byte some token is by itself. Any byte string over these can be written token by
   * token, which is what makes a grammar state completable (grammar.ts); a tokenizer whose byte
   * fallbacks <0xNN> are special tokens (dropped by decoding, so never used here) lacks most bytes >= 0x80.
   */
  readonly singleByte: Uint8Array;

  constructor(
    /** Bytes per token id; ids >= modelVocabSize are dropped, null ones are never allowed. */
    readonly bytes: readonly (Uint8Array | null)[],
    readonly modelVocabSize: number,
    readonly eosTokenIds: readonly number[],
  ) {
    const eos = new Set(eosTokenIds);
    const usable = bytes.slice(0, modelVocabSize).map((b, id) => (eos.has(id) ? null : b));
    this.trie = new TokenTrie(usable);
    this.words = Math.ceil(modelVocabSize / 32);
    this.maxTokenBytes = this.trie.maxDepth;
    this.singleByte = new Uint8Array(256);
    for (const b of usable) if (b && b.length === 1) this.singleByte[b[0]!] = 1;
    this.eosMask = new Uint32Array(this.words);
    for (const id of eosTokenIds) if (id >= 0 && id < modelVocabSize) this.eosMask[id >>> 5]! |= 1 << (id & 31);
  }
}
