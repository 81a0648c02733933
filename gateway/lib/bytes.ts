// Text and byte encodings (UTF-8, base64url, hex) written against Web APIs only: the same code
// runs on Node 20 and on Workers, so nothing here touches node: modules or Buffer.
const enc = new TextEncoder();

export type Bytes = Uint8Array<ArrayBuffer>;

export function utf8(text: string): Bytes {
  return enc.encode(text) as Bytes;
}

/** UTF-8 byte length without allocating for ASCII-only strings. */
export function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

export function base64url(bytes: Uint8Array): string {
  let bin = '';
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]!);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function fromBase64url(text: string): Bytes {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function hex(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += bytes[i]!.toString(16).padStart(2, '0');
  return s;
}

/** Where `needle` first occurs in `hay[from..to)`, or -1 (a byte search: nothing is decoded). */
export function indexOfBytes(hay: Uint8Array, needle: Uint8Array, from = 0, to = hay.length): number {
  const n = needle.length;
  if (n === 0) return from <= to ? from : -1;
  const first = needle[0]!;
  const last = to - n;
  for (let i = from; i <= last; i++) {
    i = hay.indexOf(first, i);
    if (i < 0 || i > last) return -1;
    let k = 1;
    while (k < n && hay[i + k] === needle[k]) k++;
    if (k === n) return i;
  }
  return -1;
}

/** Whether `hay[at..]` starts with `prefix` (and it fits before `to`). */
export function bytesAt(hay: Uint8Array, at: number, prefix: Uint8Array, to = hay.length): boolean {
  if (at < 0 || at + prefix.length > to) return false;
  for (let k = 0; k < prefix.length; k++) if (hay[at + k] !== prefix[k]) return false;
  return true;
}

/** One array holding `parts` one after another (the part itself when there is only one). */
export function concatBytes(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let n = 0;
  for (const p of parts) n += p.byteLength;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}
