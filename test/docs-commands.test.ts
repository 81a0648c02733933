// Every command the docs show must work as written (issue 17). The commands are pulled out of
// README.md, docs/*.md and each folder's README.md (shell code blocks and inline `npx switchboard`
// spans); the harmless ones run: `--help` / `--version` through the real binary, every
// `switchboard serve|start|gateway` line through the CLI's own argument parser (a dry run: each
// flag known, each value valid), npm scripts against package.json, and the files docker/helm
// lines name against the tree. A command that cannot be checked this way is listed, not skipped
// silently.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseServeConfig } from '../backend/config.ts';
import { DEFAULT_MODEL } from '../backend/cli.ts';
import { parseGatewayArgs } from '../gateway/node.ts';

const ROOT = join(import.meta.dirname, '..');

function docFiles(): string[] {
  const files = ['README.md'];
  for (const f of readdirSync(join(ROOT, 'docs'))) if (f.endsWith('.md')) files.push(join('docs', f));
  for (const d of readdirSync(ROOT)) {
    if (d.startsWith('.') || d === 'node_modules' || !statSync(join(ROOT, d)).isDirectory()) continue;
    if (existsSync(join(ROOT, d, 'README.md'))) files.push(join(d, 'README.md'));
  }
  return files;
}

/** Shell-style words: quotes grouped, `#` comments and a trailing `&` dropped. */
function words(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quote: string | null = null;
  let has = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quote) {
      if (ch === quote) quote = null;
      else cur += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      has = true;
    } else if (/\s/.test(ch)) {
      if (has || cur) out.push(cur);
      cur = '';
      has = false;
    } else if (ch === '#' && !cur && !has) {
      break;
    } else {
      cur += ch;
    }
  }
  if (has || cur) out.push(cur);
  while (out.at(-1) === '&') out.pop();
  return out;
}

/** The commands of one markdown file: shell blocks (continuations joined) and inline npx spans. */
export function commandsOf(md: string): string[] {
  const cmds: string[] = [];
  let block: string[] | null = null;
  for (const line of md.split('\n')) {
    const fence = /^\s*```(\w*)\s*$/.exec(line);
    if (fence) {
      if (block) {
        cmds.push(...block.join('\n').replace(/\\\n\s*/g, ' ').split('\n'));
        block = null;
      } else if (['', 'sh', 'bash', 'shell', 'console'].includes(fence[1]!)) block = [];
      else block = null;
      continue;
    }
    if (block) block.push(line.replace(/^\s*\$\s+/, ''));
  }
  // Inline: what a reader would paste (`npx switchboard ...`); a bare `switchboard serve` in prose names the command.
  for (const m of md.matchAll(/`(npx switchboard[^`]*)`/g)) cmds.push(m[1]!);
  return cmds.map((c) => c.trim()).filter((c) => c && !c.startsWith('#'));
}

const dir = mkdtempSync(join(tmpdir(), 'docs-commands-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const secret = join(dir, 'secret');
writeFileSync(secret, 'docs-command-test-secret-0123456789abcdef-0123456789\n');

/** `--x-file <path>` values replaced by a readable secret: the docs' paths are the reader's own. */
function withSecretFiles(args: string[]): string[] {
  return args.map((a, i) => (i > 0 && args[i - 1]!.endsWith('-file') && !a.startsWith('--') ? secret : a.replace(/^(--[\w-]+-file)=.*/, `$1=${secret}`)));
}

function binary(args: string[]) {
  return spawnSync(process.execPath, [join(ROOT, 'bin', 'switchboard.mjs'), ...args], { cwd: ROOT, encoding: 'utf-8', timeout: 60_000, env: { ...process.env } });
}

describe('every command in the docs', () => {
  const all = docFiles().flatMap((f) => commandsOf(readFileSync(join(ROOT, f), 'utf-8')).map((cmd) => ({ file: f, cmd })));
  const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf-8')) as { scripts: Record<string, string> }).scripts;
  let checked = 0;

  for (const { file, cmd } of all) {
    let w = words(cmd.replace(/\[|\]/g, ' '));
    while (w[0] && /^[A-Z_][A-Z0-9_]*=/.test(w[0])) w = w.slice(1); // VAR=value prefixes
    const [head, ...rest] = w;
    const sw = head === 'npx' && rest[0] === 'switchboard' ? rest.slice(1) : head === 'switchboard' ? rest : null;
    if (sw) {
      it(`${file}: ${cmd}`, () => {
        checked++;
        const [sub, ...args] = sw;
        if (!sub || sub.startsWith('-') || args.includes('--help') || args.includes('--version')) {
          const r = binary(sw);
          assert.equal(r.status, 0, r.stderr);
          assert.ok(r.stdout.length > 0);
          return;
        }
        if (sub === 'serve' || sub === 'start') {
          const argv = sub === 'start' && !args.some((a) => a.startsWith('--model-id')) ? ['--model-id', DEFAULT_MODEL, ...args] : args;
          parseServeConfig(withSecretFiles(argv.filter((a) => !/^<.*>$/.test(a))), {});
        } else if (sub === 'gateway') {
          parseGatewayArgs(withSecretFiles(args), {});
        } else {
          assert.fail(`unknown switchboard command "${sub}"`);
        }
      });
    } else if (head === 'npm') {
      it(`${file}: ${cmd}`, () => {
        checked++;
        const [verb, name] = rest;
        if (verb === 'ci' || verb === 'install') return;
        const script = verb === 'run' ? name! : verb!;
        assert.ok(scripts[script], `package.json has no "${script}" script`);
      });
    } else if (head === 'docker' || head === 'helm') {
      it(`${file}: ${cmd}`, () => {
        checked++;
        const paths = rest.filter((a, i) => rest[i - 1] === '-f' || /^infra\//.test(a));
        assert.ok(paths.length > 0, 'names a file of the tree');
        for (const p of paths) assert.ok(existsSync(join(ROOT, p)), `${p} exists`);
      });
    }
  }

  it('checked a meaningful number of commands', () => {
    assert.ok(checked >= 10, `only ${checked} commands checked`);
  });
});
