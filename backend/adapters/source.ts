// Where adapters come from. A source turns an adapter id into a local PEFT directory,
// downloading into the disk cache when it must.
import type { ServedAdapterSource } from '../../protocol/index.ts';

export type AdapterSourceName = ServedAdapterSource;

export interface AdapterRef {
  id: string;
  source: AdapterSourceName;
  revision?: string;
  /** Hub token; a private adapter fetched with one token is never served to a request without it. */
  apiToken?: string;
}

export interface AdapterSource {
  /** Returns a local directory holding adapter_config.json and adapter_model.safetensors. */
  fetch(ref: AdapterRef, signal?: AbortSignal): Promise<string>;
}

/** A 4xx-class problem with the adapter a client named (not found, not allowed, malformed). */
export class AdapterError extends Error {
  constructor(
    message: string,
    readonly status: 400 | 401 | 403 | 404 | 422 = 400,
  ) {
    super(message);
    this.name = 'AdapterError';
  }
}
