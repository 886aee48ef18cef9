// Where the edge's event loop spends a search by image: reads a V8 .cpuprofile of
// `bench:e2e` and prints, per request, the inclusive time of the busiest functions during the
// timed searches (the span in which `searchCollection` is on the stack, its first 5 % skipped
// as warm-up). Inclusive: a caller's figure contains its callees'.
//
//   npx node --cpu-prof --cpu-prof-dir=/tmp/prof --import tsx scripts/bench/e2e.ts --paths backend-cpu --requests 1500
//   npx tsx scripts/bench/cpuprofile.ts /tmp/prof/CPU.*.cpuprofile --requests 1500 [--top 30]
import { readFileSync } from 'node:fs';

interface ProfileNode { id: number; callFrame: { functionName: string; url: string }; children?: number[] }
interface Profile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }

const args = process.argv.slice(2);
const opt = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i < 0 ? dflt : Number(args[i + 1]);
};
const file = args.find((a) => a.endsWith('.cpuprofile'));
if (!file) throw new Error('usage: cpuprofile.ts FILE.cpuprofile --requests N [--top 30]');
const requests = opt('requests', 1500);
const top = opt('top', 30);

const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const label = (n: ProfileNode) => `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.split('/').pop() ?? ''}`.trim();
const stack = (id: number) => {
  const out: ProfileNode[] = [];
  for (let i: number | undefined = id; i !== undefined; i = parent.get(i)) out.push(byId.get(i)!);
  return out;
};

const times: number[] = [];
let t = 0;
for (const d of p.timeDeltas) times.push((t += d));
const inSearch = p.samples.map((s) => stack(s).some((n) => n.callFrame.functionName === 'searchCollection'));
const marked = times.filter((_, i) => inSearch[i]);
if (marked.length === 0) throw new Error('no sample inside searchCollection: is this a bench:e2e profile?');
const from = marked[Math.floor(marked.length * 0.05)];
const to = marked[marked.length - 1];
// The requests inside the window: the timed ones, less the skipped warm-up share.
const n = requests * 0.95;

const inclusive = new Map<string, number>();
let total = 0;
let idle = 0;
p.samples.forEach((s, i) => {
  if (times[i] < from || times[i] > to) return;
  const dt = p.timeDeltas[i];
  total += dt;
  const frames = stack(s);
  if (frames[0].callFrame.functionName === '(idle)') idle += dt;
  for (const name of new Set(frames.map(label))) inclusive.set(name, (inclusive.get(name) ?? 0) + dt);
});

const ms = (us: number) => (us / 1000 / n).toFixed(3);
console.log(`window ${((to - from) / 1e6).toFixed(1)} s, ~${Math.round(n)} requests: busy ${ms(total - idle)} ms per request, idle ${ms(idle)} ms`);
const rows = [...inclusive].filter(([k]) => !['(root)', '(idle)', '(program)'].includes(k)).sort((a, b) => b[1] - a[1]).slice(0, top);
for (const [k, v] of rows) console.log(`${ms(v).padStart(8)} ms  ${k}`);
