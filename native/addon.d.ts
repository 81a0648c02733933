// The raw N-API surface of native/build/Release/switchboard_native.node.
// Nothing outside native/ imports this: the rest of the code goes through native/engine.ts,
// which validates model directories and adapters before any byte reaches C++.

export type NativeDType = 'F32' | 'F16' | 'BF16';

/** A tensor the engine reads from a file (or takes inline, for merged adapters). */
export interface NativeTensorRef {
  name: string;
  dtype: NativeDType;
  shape: number[];
  /** Absolute path of the safetensors file holding the bytes. */
  file?: string;
  /** Byte offset of the tensor's data inside `file`. */
  offset?: number;
  nbytes?: number;
  /** Inline data, used instead of `file` (e.g. a merged adapter computed in JS). */
  data?: Float32Array;
}

export type RopeType = 'default' | 'linear' | 'llama3';

export interface NativeModelSpec {
  arch: 'llama' | 'mistral' | 'qwen2';
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeType: RopeType;
  ropeFactor: number;
  ropeLowFreqFactor: number;
  ropeHighFreqFactor: number;
  ropeOriginalMaxPositions: number;
  /** Per layer: attention window in tokens (a query sees keys with q - k < window), 0 = full. */
  slidingWindow: number[];
  attentionBias: boolean;
  tieWordEmbeddings: boolean;
  /** Every weight, by its Hugging Face name (model.layers.0.self_attn.q_proj.weight, ...). */
  tensors: NativeTensorRef[];
}

export interface NativeEngineOptions {
  /** KV cache: number of blocks and tokens per block. */
  numBlocks: number;
  blockSize: number;
  /** Adapter slots resident at once. */
  maxAdapters: number;
  /** Worker threads for the CPU engine's matrix products (default: hardware threads). */
  threads?: number;
}

export type LoraModuleName =
  | 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj';

export interface NativeLoraModule {
  layer: number;
  module: LoraModuleName;
  rank: number;
  /** lora_alpha / r, or lora_alpha / sqrt(r) with rslora, after rank_pattern / alpha_pattern. */
  scale: number;
  /** lora_A: [rank, in_features]. */
  a: NativeTensorRef;
  /** lora_B: [out_features, rank]. */
  b: NativeTensorRef;
}

export interface NativeAdapterSpec {
  modules: NativeLoraModule[];
}

export interface NativeSampling {
  /** 0 = greedy (argmax). */
  temperature: number;
  /** 0 = off. */
  topK: number;
  /** 1 = off. */
  topP: number;
  /** 1 = off. */
  typicalP: number;
  /** 1 = off; HF semantics: logits of seen tokens divided (positive) or multiplied (negative). */
  repetitionPenalty: number;
  /** Sampling draws depend only on (seed, position), never on the batch. */
  seed: number;
}

export interface NativeSeqInput {
  /** Tokens to run this step (a prefill chunk, or one decode token). */
  tokens: Int32Array;
  /** Absolute position of tokens[0]; the KV cache holds positions [0, position). */
  position: number;
  /** KV block ids covering positions [0, position + tokens.length). */
  blockTable: Int32Array;
  /** Adapter slot, or -1 for the base model. */
  adapterSlot: number;
  /** Return logprobs of tokens[1..] given their prefixes (and of nextToken if given). */
  promptLogprobs: boolean;
  /** The token that follows this chunk (a later prefill chunk's first token), scored at the last position. */
  nextToken: number;
  /** Sample one token after the last position. */
  sample: boolean;
  /** How many top alternatives to return per scored position (0 = none). */
  topLogprobs: number;
  sampling: NativeSampling;
  /** Tokens seen so far, for the repetition penalty (empty when it is off). */
  penaltyTokens: Int32Array;
  /** Allowed-token bitset (bit t of word t>>5), or empty for no constraint. */
  mask: Uint32Array;
}

export interface NativeTopLogprobs {
  ids: Int32Array;
  logprobs: Float32Array;
}

export interface NativeSeqOutput {
  /** Sampled token, or -1 when sample was false. */
  token: number;
  /** Log-probability of the sampled token under the model (raw log-softmax of the logits). */
  logprob: number;
  /** Alternatives at the sampled position (when topLogprobs > 0). */
  top: NativeTopLogprobs | null;
  /** Logprobs of tokens[1..] (and nextToken) when promptLogprobs was set. */
  promptLogprobs: Float32Array | null;
  /** Alternatives at each scored prompt position (when promptLogprobs and topLogprobs > 0). */
  promptTop: NativeTopLogprobs[] | null;
}

export interface NativeEngineInfo {
  device: 'cpu' | 'cuda';
  deviceName: string;
  numBlocks: number;
  blockSize: number;
  maxAdapters: number;
  weightBytes: number;
}

export declare class NativeEngine {
  constructor(spec: NativeModelSpec, options: NativeEngineOptions);
  /** Reads and converts the weights off the JS thread. */
  load(): Promise<void>;
  info(): NativeEngineInfo;
  loadAdapter(slot: number, spec: NativeAdapterSpec): Promise<void>;
  unloadAdapter(slot: number): void;
  step(batch: NativeSeqInput[]): Promise<NativeSeqOutput[]>;
  close(): void;
}

export declare const cudaAvailable: boolean;
export declare function cudaDeviceCount(): number;
