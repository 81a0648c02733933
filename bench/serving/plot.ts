// The serving benchmark's plot as a standalone SVG (no plotting library on the machines this runs
// on): left, output tokens/s of each closed loop beside what the engine alone gives for the same
// batches; right, TTFT and inter-token latency p50/p99 against the Poisson arrival rate (log scale).
import type { PhaseResult } from './bench.ts';

interface Results {
  device: string;
  shape: string | undefined;
  adapters: number;
  clients: number;
  rows: PhaseResult[];
}

const W = 960;
const H = 430;
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceMax(x: number): number {
  if (!(x > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

export function svgPlot(r: Results): string {
  const out: string[] = [];
  const text = (x: number, y: number, s: string, o: { size?: number; anchor?: string; rotate?: boolean; weight?: string } = {}) =>
    out.push(`<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" font-size="${o.size ?? 11}" text-anchor="${o.anchor ?? 'middle'}"${o.weight ? ` font-weight="${o.weight}"` : ''}${o.rotate ? ` transform="rotate(-90 ${x.toFixed(1)} ${y.toFixed(1)})"` : ''}>${esc(s)}</text>`);
  const line = (x1: number, y1: number, x2: number, y2: number, stroke = '#000', extra = '') =>
    out.push(`<line x1="${x1.toFixed(1)}" y1="${y1.toFixed(1)}" x2="${x2.toFixed(1)}" y2="${y2.toFixed(1)}" stroke="${stroke}"${extra}/>`);

  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">`);
  out.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  text(W / 2, 20, `Serving: ${r.shape} shape, ${r.adapters} adapters, ${r.clients} clients — ${r.device}`, { size: 14, weight: 'bold' });

  // Left: closed-loop throughput, served vs engine-only.
  const closed = r.rows.filter((x) => x.phase === 'closed loop');
  const L = { x: 70, y: 50, w: 360, h: 300 };
  const ymax = niceMax(Math.max(...closed.flatMap((x) => [x.outTokS, Number.isFinite(x.engineTokS) ? x.engineTokS : 0])));
  for (let i = 0; i <= 5; i++) {
    const v = (ymax * i) / 5;
    const y = L.y + L.h - (L.h * i) / 5;
    line(L.x, y, L.x + L.w, y, '#ddd');
    text(L.x - 6, y + 4, v >= 100 ? v.toFixed(0) : v.toPrecision(2), { anchor: 'end', size: 10 });
  }
  line(L.x, L.y, L.x, L.y + L.h);
  line(L.x, L.y + L.h, L.x + L.w, L.y + L.h);
  text(L.x - 50, L.y + L.h / 2, 'output tokens/s', { rotate: true });
  text(L.x + L.w / 2, L.y - 8, 'closed loop: served vs engine-only (same batches)', { size: 12 });
  const slot = L.w / Math.max(1, closed.length);
  closed.forEach((x, i) => {
    const bw = slot * 0.32;
    const x0 = L.x + slot * i + slot * 0.16;
    const bar = (v: number, dx: number, fill: string) => {
      if (!Number.isFinite(v)) return;
      const h = (L.h * v) / ymax;
      out.push(`<rect x="${(x0 + dx).toFixed(1)}" y="${(L.y + L.h - h).toFixed(1)}" width="${bw.toFixed(1)}" height="${h.toFixed(1)}" fill="${fill}"/>`);
      text(x0 + dx + bw / 2, L.y + L.h - h - 3, v >= 100 ? v.toFixed(0) : v.toFixed(1), { size: 9 });
    };
    bar(x.outTokS, 0, '#1f77b4');
    bar(x.engineTokS, bw, '#aec7e8');
    text(x0 + bw, L.y + L.h + 16, x.adapters === 'none' ? 'no adapter' : x.adapters, { size: 10 });
  });
  out.push(`<rect x="${L.x + 10}" y="${L.y + L.h + 30}" width="12" height="10" fill="#1f77b4"/>`);
  text(L.x + 26, L.y + L.h + 39, 'served (HTTP, client-side)', { anchor: 'start', size: 10 });
  out.push(`<rect x="${L.x + 190}" y="${L.y + L.h + 30}" width="12" height="10" fill="#aec7e8"/>`);
  text(L.x + 206, L.y + L.h + 39, 'engine-only (server step time)', { anchor: 'start', size: 10 });

  // Right: latency vs Poisson rate, log y.
  const pois = r.rows.filter((x) => x.phase === 'poisson');
  const P = { x: 560, y: 50, w: 360, h: 300 };
  const rate = (x: PhaseResult) => Number(/([\d.]+) req\/s/.exec(x.load)?.[1] ?? NaN);
  const series: [string, string, (x: PhaseResult) => number, string][] = [
    ['TTFT p50', '#d62728', (x) => x.ttftP50, ''],
    ['TTFT p99', '#d62728', (x) => x.ttftP99, ' stroke-dasharray="5,3"'],
    ['ITL p50', '#2ca02c', (x) => x.itlP50, ''],
    ['ITL p99', '#2ca02c', (x) => x.itlP99, ' stroke-dasharray="5,3"'],
  ];
  const vals = pois.flatMap((x) => series.map((s) => s[2](x))).filter((v) => Number.isFinite(v) && v > 0);
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...vals, 1))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...vals, 10))));
  const rates = pois.map(rate);
  const xmax = niceMax(Math.max(...rates, 0.01));
  const px = (v: number) => P.x + (P.w * v) / xmax;
  const py = (v: number) => P.y + P.h - (P.h * (Math.log10(v) - Math.log10(lo))) / (Math.log10(hi) - Math.log10(lo));
  for (let d = lo; d <= hi; d *= 10) {
    line(P.x, py(d), P.x + P.w, py(d), '#ddd');
    text(P.x - 6, py(d) + 4, d >= 1 ? d.toFixed(0) : String(d), { anchor: 'end', size: 10 });
  }
  for (let i = 0; i <= 4; i++) {
    const v = (xmax * i) / 4;
    text(px(v), P.y + P.h + 16, String(Number(v.toPrecision(3))), { size: 10 });
  }
  line(P.x, P.y, P.x, P.y + P.h);
  line(P.x, P.y + P.h, P.x + P.w, P.y + P.h);
  text(P.x - 45, P.y + P.h / 2, 'latency (ms, log)', { rotate: true });
  text(P.x + P.w / 2, P.y + P.h + 32, 'Poisson arrival rate (requests/s; a missing point: 0 ms, off the log scale)', { size: 11 });
  text(P.x + P.w / 2, P.y - 8, `Poisson arrivals, ${r.adapters} adapters drawn uniformly`, { size: 12 });
  series.forEach(([name, color, get, dash], k) => {
    const pts = pois.map((x) => [px(rate(x)), get(x)] as const).filter(([, v]) => Number.isFinite(v) && v > 0).map(([x, v]) => `${x.toFixed(1)},${py(v).toFixed(1)}`);
    if (pts.length) out.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${color}" stroke-width="2"${dash}/>`);
    for (const p of pts) {
      const [x, y] = p.split(',');
      out.push(`<circle cx="${x}" cy="${y}" r="3" fill="${color}"/>`);
    }
    // Legend in a row under the axis title, clear of the data.
    const lx = P.x + 10 + 90 * k;
    const ly = P.y + P.h + 52;
    line(lx, ly - 4, lx + 22, ly - 4, color, ` stroke-width="2"${dash}`);
    text(lx + 26, ly, name, { anchor: 'start', size: 10 });
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
