// `adapter_source: "s3"` (LoRAX's): adapter_id "s3://bucket/prefix" names a PEFT adapter folder in
// S3 or an S3-compatible store, read with the official AWS SDK and its standard credential chain
// (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles, ...), AWS_REGION, and an
// endpoint override (AWS_ENDPOINT_URL_S3 / --s3-endpoint) for MinIO, R2 and the like.
// The credentials are the server's, not the caller's: only buckets the operator lists
// (--s3-buckets) can be named, as the operator's hub token is only lent by opt-in.
// Files are cached per object version (their ETags), so a second load costs two HEADs.
// The SDK is loaded on the first S3 adapter only: servers that never use S3 pay nothing for it
// (start-up time, and the SDK's Node-version notice).
import type { S3Client } from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ADAPTER_FILES } from '../../protocol/index.ts';
import { ADAPTER_PICKLE_FILE } from '../../native/peft-adapter.ts';
import { AdapterError, type AdapterRef, type AdapterSource } from './source.ts';

export interface S3SourceOptions {
  /** Where downloaded adapters are kept. */
  cacheDir: string;
  /** Buckets adapter ids may name; "*" allows any. Empty: the source is off. */
  buckets: readonly string[];
  /** An S3-compatible endpoint (path-style addressing is used with it). */
  endpoint?: string | undefined;
  region?: string | undefined;
  /** For tests: a client built elsewhere. */
  client?: S3Client;
}

/** Bucket names as S3 allows them; prefixes without path games or control characters. */
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const MAX_ADAPTER_BYTES = 4 * 2 ** 30;

export function parseS3Id(id: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(id);
  if (!m) throw new AdapterError(`adapter_id "${id}" is not an S3 location (expected s3://bucket/prefix)`);
  const bucket = m[1]!;
  const prefix = m[2]!.replace(/\/+$/, '');
  if (!BUCKET.test(bucket) || bucket.includes('..')) throw new AdapterError(`"${bucket}" is not a valid S3 bucket name`);
  const badSegment = prefix !== '' && prefix.split('/').some((p) => p === '' || p === '.' || p === '..');
  // eslint-disable-next-line no-control-regex
  if (badSegment || /[\u0000-\u001f\\]/.test(prefix)) {
    throw new AdapterError(`"${prefix}" is not a usable S3 prefix`);
  }
  return { bucket, prefix };
}

/** The HTTP status of an S3 service error (the SDK's S3ServiceException carries it in $metadata). */
function s3Status(err: unknown): number | undefined {
  const meta = (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata;
  return typeof meta?.httpStatusCode === 'number' ? meta.httpStatusCode : undefined;
}

type Sdk = typeof import('@aws-sdk/client-s3');

export class S3Source implements AdapterSource {
  private sdk: Promise<{ sdk: Sdk; client: S3Client }> | null = null;
  private readonly inflight = new Map<string, Promise<string>>();

  constructor(private readonly opts: S3SourceOptions) {}

  private connect(): Promise<{ sdk: Sdk; client: S3Client }> {
    this.sdk ??= import('@aws-sdk/client-s3').then((sdk) => ({
      sdk,
      client:
        this.opts.client ??
        new sdk.S3Client({
          region: this.opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
          ...(this.opts.endpoint ? { endpoint: this.opts.endpoint, forcePathStyle: true } : {}),
        }),
    }));
    return this.sdk;
  }

  async fetch(ref: AdapterRef, signal?: AbortSignal): Promise<string> {
    const { bucket, prefix } = parseS3Id(ref.id);
    if (this.opts.buckets.length === 0) throw new AdapterError('adapter_source "s3" is not enabled on this server (the operator lists readable buckets with --s3-buckets)', 422);
    if (!this.opts.buckets.includes('*') && !this.opts.buckets.includes(bucket)) {
      throw new AdapterError(`S3 bucket "${bucket}" is not one this server reads adapters from`, 403);
    }
    const key = `${bucket}/${prefix}`;
    let p = this.inflight.get(key);
    if (!p) {
      p = this.download(bucket, prefix, ref.id, signal).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return await p;
  }

  private object(prefix: string, file: string): string {
    return prefix ? `${prefix}/${file}` : file;
  }

  private async head(bucket: string, key: string, id: string, signal?: AbortSignal): Promise<{ etag: string; size: number } | null> {
    const { sdk, client } = await this.connect();
    try {
      const h = await client.send(new sdk.HeadObjectCommand({ Bucket: bucket, Key: key }), signal ? { abortSignal: signal } : {});
      return { etag: (h.ETag ?? '').replace(/"/g, ''), size: h.ContentLength ?? 0 };
    } catch (err) {
      const status = s3Status(err);
      if (status === 404) return null;
      if (status === 401 || status === 403) throw new AdapterError(`S3 refused access to adapter "${id}" (check the server's AWS credentials)`, 403);
      throw new AdapterError(`adapter "${id}": S3 failed: ${(err as Error).message}`, 422);
    }
  }

  private async download(bucket: string, prefix: string, id: string, signal?: AbortSignal): Promise<string> {
    const config = await this.head(bucket, this.object(prefix, ADAPTER_FILES[0]), id, signal);
    if (!config) throw new AdapterError(`adapter "${id}" not found (no ${ADAPTER_FILES[0]} under it)`, 404);
    // PEFT's safetensors file, else its older adapter_model.bin (read without running the pickle).
    let weightsFile: string = ADAPTER_FILES[1];
    let weights = await this.head(bucket, this.object(prefix, weightsFile), id, signal);
    if (!weights) {
      weightsFile = ADAPTER_PICKLE_FILE;
      weights = await this.head(bucket, this.object(prefix, weightsFile), id, signal);
    }
    if (!weights) throw new AdapterError(`adapter "${id}" has no ${ADAPTER_FILES[1]}`, 422);
    if (config.size + weights.size > MAX_ADAPTER_BYTES) throw new AdapterError(`adapter "${id}" is too large`, 422);
    // One folder per (location, object versions): a re-uploaded adapter gets a fresh one.
    const version = createHash('sha256').update(`${bucket}\0${prefix}\0${config.etag}\0${weights.etag}`).digest('hex').slice(0, 32);
    const dir = path.join(this.opts.cacheDir, version);
    const files: [string, { etag: string; size: number }][] = [[ADAPTER_FILES[0], config], [weightsFile, weights]];
    if ((await Promise.all(files.map(([f, m]) => stat(path.join(dir, f)).then((s) => s.size === m.size, () => false)))).every(Boolean)) return dir;
    const tmp = `${dir}.${process.pid}.${Date.now()}.partial`;
    await mkdir(tmp, { recursive: true });
    const { sdk, client } = await this.connect();
    try {
      for (const [file, meta] of files) {
        const res = await client
          .send(new sdk.GetObjectCommand({ Bucket: bucket, Key: this.object(prefix, file), IfMatch: `"${meta.etag}"` }), signal ? { abortSignal: signal } : {})
          .catch((err: unknown) => {
            throw new AdapterError(`adapter "${id}": downloading ${file} from S3 failed: ${(err as Error).message}`, s3Status(err) === 403 ? 403 : 422);
          });
        const body = await res.Body!.transformToByteArray();
        if (body.byteLength !== meta.size) throw new AdapterError(`adapter "${id}": ${file} changed size while downloading`, 422);
        // A single-part upload's ETag is the MD5 of its bytes: check it where it is one.
        if (/^[0-9a-f]{32}$/.test(meta.etag) && createHash('md5').update(body).digest('hex') !== meta.etag) {
          throw new AdapterError(`adapter "${id}": ${file} does not match its S3 ETag (corrupted in transit)`, 422);
        }
        await writeFile(path.join(tmp, file), body);
      }
      await rm(dir, { recursive: true, force: true });
      await rename(tmp, dir);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    return dir;
  }
}
