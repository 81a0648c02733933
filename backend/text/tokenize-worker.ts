// The worker side of tokenize-pool.ts: holds its own copy of the model's tokenizer and chat
// template, and runs the jobs whose cost grows with the input (encoding, chat rendering, the
// per-token texts of /tokenize) so the request loop never does. The token bound is checked on the
// rendered text before encoding it, so an over-long chat costs a render, never an encode. A prompt
// the JSON body parser kept (json-body.ts) is fetched from that thread first; only its end when
// it is to be truncated (encode-tail.ts).
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import type { TextReply, TextRequest } from '../json-body.ts';
import { encodeLast, tailChars, type TailCuts } from './encode-tail.ts';
import { tokensAtLeast } from '../request-limits.ts';
import { ChatTemplateError, TextTokenizer, type ChatTurn } from './tokenizer.ts';
import { lowerWorkerThreadPriority } from '../worker-priority.ts';

lowerWorkerThreadPriority();

/**
 * A prompt kept by the JSON body parser thread (json-body.ts's LargeText): this thread asks for it
 * on `port` (a channel to the parser thread made for this one job), so it never crosses the loop.
 */
export interface TextRef {
  ref: number;
  port: MessagePort;
}

export type TokenizeJob =
  // keepLast: only the last this many ids come back (truncation), so a multi-megabyte prompt's ids never cross to the loop.
  | { id: number; op: 'encode'; text: string | TextRef; addSpecial: boolean; maxTokens: number | null; keepLast: number | null }
  | { id: number; op: 'chat'; messages: ChatTurn[]; addGenerationPrompt: boolean; maxTokens: number | null }
  | { id: number; op: 'detail'; text: string; addSpecial: boolean; maxTokens: number | null };

export type TokenizeReply =
  | { id: number; ok: true; ids: Int32Array; texts?: string[]; special?: Uint8Array }
  | { id: number; ok: false; kind: 'too_long'; atLeast: number }
  | { id: number; ok: false; kind: 'template' | 'error'; message: string };

export interface WorkerInit {
  modelDir: string;
  eos: number | number[] | null;
  /** Longest text one token can cover (UTF-16 units), or null where no such bound holds. */
  maxCharsPerToken: number | null;
  /** Where the tokenizer may be cut for truncation from a window of the text's end, or null (encode-tail.ts). */
  tailEncodable: TailCuts;
}

const init = workerData as WorkerInit;
const tok = await TextTokenizer.load(init.modelDir, init.eos);

type Resolved = Exclude<TokenizeJob, { op: 'encode' }> | (Extract<TokenizeJob, { op: 'encode' }> & { text: string });

function run(job: Resolved): TokenizeReply {
  let text: string;
  let addSpecial: boolean;
  if (job.op === 'chat') {
    try {
      text = tok.applyChatTemplate(job.messages, job.addGenerationPrompt);
    } catch (err) {
      return { id: job.id, ok: false, kind: err instanceof ChatTemplateError ? 'template' : 'error', message: (err as Error).message };
    }
    addSpecial = false;
  } else {
    text = job.text;
    addSpecial = job.addSpecial;
  }
  if (job.maxTokens !== null) {
    const atLeast = tokensAtLeast(text.length, init.maxCharsPerToken);
    if (atLeast > job.maxTokens) return { id: job.id, ok: false, kind: 'too_long', atLeast };
  }
  if (job.op === 'encode' && job.keepLast !== null) return { id: job.id, ok: true, ids: Int32Array.from(encodeLast(tok, text, addSpecial, job.keepLast, init.tailEncodable)!) };
  const ids = Int32Array.from(tok.encode(text, addSpecial));
  if (job.op !== 'detail') return { id: job.id, ok: true, ids };
  if (job.maxTokens !== null && ids.length > job.maxTokens) return { id: job.id, ok: false, kind: 'too_long', atLeast: ids.length };
  const texts = Array.from(ids, (i) => tok.decode([i], false));
  const special = Uint8Array.from(ids, (i) => (tok.isSpecial(i) ? 1 : 0));
  return { id: job.id, ok: true, ids, texts, special };
}

function handle(job: Resolved): void {
  let reply: TokenizeReply;
  try {
    reply = run(job);
  } catch (err) {
    reply = { id: job.id, ok: false, kind: 'error', message: (err as Error).message ?? String(err) };
  }
  parentPort!.postMessage(reply, reply.ok ? [reply.ids.buffer as ArrayBuffer] : []);
}

parentPort!.on('message', (job: TokenizeJob) => {
  if (job.op !== 'encode' || typeof job.text === 'string') return handle(job as Resolved);
  const { ref, port } = job.text;
  let done = false;
  const finish = (reply: () => void) => {
    done = true;
    port.close();
    reply();
  };
  const fail = (message: string) => parentPort!.postMessage({ id: job.id, ok: false, kind: 'error', message } satisfies TokenizeReply);
  // Truncation asks for the prompt's end first, and for the whole only if that is not enough.
  const truncating = job.keepLast !== null && init.tailEncodable !== null;
  port.on('message', (r: TextReply) => {
    if (r.text === null) return finish(() => fail("the request's prompt is gone (the request ended)"));
    if (r.whole) return finish(() => handle({ ...job, text: r.text! }));
    let ids: number[] | null;
    try {
      ids = encodeLast(tok, r.text, job.addSpecial, job.keepLast!, init.tailEncodable, false);
    } catch (err) {
      return finish(() => fail((err as Error).message ?? String(err)));
    }
    if (ids === null) return port.postMessage({ job: job.id, text: ref } satisfies TextRequest);
    const reply: TokenizeReply = { id: job.id, ok: true, ids: Int32Array.from(ids) };
    finish(() => parentPort!.postMessage(reply, [reply.ids.buffer as ArrayBuffer]));
  });
  // The parser thread ended before it answered.
  port.once('close', () => done || fail('the JSON body parser thread ended'));
  port.postMessage({ job: job.id, text: ref, ...(truncating ? { tail: tailChars(job.keepLast!) } : {}) } satisfies TextRequest);
});
parentPort!.postMessage({ ready: true });
