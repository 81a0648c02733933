// Per-request log lines (the access log) written without ever holding the event loop. Node writes
// process.stderr synchronously when it is a pipe (on Linux), so a log reader that stops reading (a
// stuck `| tee`, a full container log pipe) would stop every request at its next log line. These
// lines go through an asynchronous stream on the same descriptor instead, buffered up to a bound;
// past it lines are dropped and counted, and the count is written once the reader catches up.
// gateway/node.ts keeps its own copy of these few lines: the gateway never imports the backend.
import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';

export const LOG_BUFFER_BYTES = 1 << 20;

/** A line writer over `out` (default: fd 2) that never blocks and holds at most `limit` bytes unwritten. */
export function boundedLineWriter(out: Writable = createWriteStream('', { fd: 2, autoClose: false }), limit = LOG_BUFFER_BYTES, prefix = '[switchboard]'): (line: string) => void {
  // A reader that went away (EPIPE) must not crash the server: the lines are lost, requests go on.
  out.on('error', () => {});
  let dropped = 0;
  return (line) => {
    if (out.destroyed || out.writableLength + line.length > limit) {
      dropped++;
      return;
    }
    if (dropped > 0) {
      out.write(`${prefix} ${dropped} log line(s) dropped: stderr was not being read\n`);
      dropped = 0;
    }
    out.write(line);
  };
}
