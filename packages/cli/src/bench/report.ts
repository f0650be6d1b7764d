/** The text report of `flashattn bench`: a results table, the anchor ratios and the notes. */
import { fmtError, fmtMs, fmtRate, makeTable } from '../format.js';
import { ANCHOR_VARIANTS, anchorName } from './anchors.js';
import type { BenchReport, BenchResult } from './run.js';

function who(r: BenchResult): string {
  if (r.anchor) return r.backend;
  return r.threads !== undefined ? `${r.backend}/${r.threads}t` : r.backend;
}

/** GFLOP/s on the CPU, TFLOP/s on a GPU, GB/s of K and V for decode (SPEC §9). */
export function throughput(r: BenchResult): string {
  if (r.flopsPerSecond === undefined) return '—';
  if (r.shape.kind === 'decode' && r.kvBytesPerSecond !== undefined)
    return fmtRate(r.kvBytesPerSecond / 1e9, 'GB/s');
  // TFLOP/s on a GPU; a GPU slower than 0.1 TFLOP/s (a software adapter) reads better in GFLOP/s.
  if (r.device && r.flopsPerSecond >= 1e11) return fmtRate(r.flopsPerSecond / 1e12, 'TFLOP/s');
  return fmtRate(r.flopsPerSecond / 1e9, 'GFLOP/s');
}

function checkCell(r: BenchResult): string {
  switch (r.status) {
    case 'pass':
      return 'pass';
    case 'fail':
      return 'FAIL';
    case 'error':
      return 'ERROR';
    case 'unsupported':
      return `n/a (${r.message})`;
    case 'skipped':
      return 'skipped';
  }
}

const resultKey = (r: BenchResult) => `${r.label}|${r.shape.causal}|${r.pass}`;

export function renderBench(report: BenchReport, argv: string[] = []): string {
  const { machine: m, options: o, results } = report;
  const lines: string[] = [];
  const passes = o.backward ? 'forward and backward' : 'forward';
  const budget = o.budget ? ` (fewer once ${o.budget} s are spent)` : '';
  lines.push(
    `flashattn${argv.length ? ` ${argv.join(' ')}` : ' bench'}: ${o.shapes} shapes, ${o.dtype}, ${passes}; median of ${o.repeat} runs${budget} after ${o.warmup} warm-up`,
  );
  const commit = m.gitCommit ? `, commit ${m.gitCommit.slice(0, 10)}${m.gitDirty ? ' (modified)' : ''}` : '';
  lines.push(
    `${m.cpuModel}, ${m.cores} cores, ${m.memoryGiB} GiB; Node ${m.node}, ${m.platform} ${m.arch}${commit}`,
  );

  for (const b of report.backends) if (b.note) lines.push(`${b.name}: ${b.note}`);

  if (results.every((r) => r.status === 'skipped')) {
    lines.push('', 'nothing was run');
  } else {
    const anyE2e = results.some((r) => r.e2eMs !== undefined);
    const head = ['backend', ...(o.backward ? ['pass'] : []), 'shape', 'causal', 'ms'];
    if (anyE2e) head.push('e2e ms');
    head.push('throughput', 'max error', 'check');
    const table = makeTable(head);
    // Grouped by backend in the order they ran (priority order), anchors last; shapes in run order.
    const rank = new Map<string, number>(report.backends.map((b, i) => [b.name, i]));
    for (const r of results) if (!rank.has(r.backend)) rank.set(r.backend, rank.size + (r.anchor ? 1000 : 0));
    const sorted = [...results].sort((a, b) => (rank.get(a.backend) ?? 0) - (rank.get(b.backend) ?? 0));
    for (const r of sorted) {
      if (r.status === 'skipped') continue;
      const row = [
        who(r),
        ...(o.backward ? [r.pass === 'forward' ? 'fwd' : 'bwd'] : []),
        r.label,
        r.shape.causal ? 'yes' : 'no',
        fmtMs(r.ms),
      ];
      if (anyE2e) row.push(fmtMs(r.e2eMs));
      row.push(throughput(r), fmtError(r.maxError), checkCell(r));
      table.push(row);
    }
    lines.push('', table.toString());
  }

  // Ratios to the anchors, per shape: anchor ms / backend ms (> 1: the backend is faster).
  const anchors = results.filter((r) => r.anchor && r.ms !== undefined);
  const contenders = results.filter(
    (r) => !r.anchor && !r.device && r.pass === 'forward' && r.ms !== undefined,
  );
  if (anchors.length > 0 && contenders.length > 0) {
    const byKey = new Map<string, BenchResult>();
    for (const a of anchors) byKey.set(`${a.backend}|${resultKey(a)}`, a);
    const names = ANCHOR_VARIANTS.map(anchorName);
    const table = makeTable(['backend', 'shape', 'causal', ...names.map((n) => `vs ${n}`)]);
    for (const r of contenders) {
      const cells = names.map((n) => {
        const a = byKey.get(`${n}|${resultKey(r)}`);
        return a?.ms !== undefined && r.ms ? `${(a.ms / r.ms).toFixed(2)}×` : '—';
      });
      table.push([who(r), r.label, r.shape.causal ? 'yes' : 'no', ...cells]);
    }
    lines.push(
      '',
      `Speed relative to onnxruntime-node ${report.anchors?.version ?? ''} (anchor ms / backend ms; above 1× the backend is faster):`,
      table.toString(),
    );
  }

  const problems = results.filter((r) => r.status === 'fail' || r.status === 'error');
  if (problems.length > 0) {
    lines.push('');
    for (const r of problems) {
      lines.push(
        `${r.status === 'fail' ? 'FAIL' : 'ERROR'} ${who(r)} ${r.pass} ${r.label}${r.shape.causal ? ' causal' : ''}: ${r.message}`,
      );
    }
  }
  // Skipped results are left out of the table (they are in --json): one line per backend here.
  const skipped = new Map<string, BenchResult[]>();
  for (const r of results) {
    if (r.status === 'skipped') skipped.set(who(r), [...(skipped.get(who(r)) ?? []), r]);
  }
  if (skipped.size > 0) {
    lines.push('');
    for (const [name, rs] of skipped) {
      const labels = rs.map((r) => `${r.label}${r.shape.causal ? ' causal' : ''}`);
      const shown =
        labels.length > 4
          ? `${labels.slice(0, 4).join('; ')} and ${labels.length - 4} more`
          : labels.join('; ');
      lines.push(
        `skipped ${name}: ${rs.length} shape${rs.length > 1 ? 's' : ''} (${shown}); the first: ${rs[0].message}`,
      );
    }
  }
  if (report.notes.length > 0) {
    lines.push('', ...report.notes.map((n) => `note: ${n}`));
  }
  const own = results.filter((r) => !r.anchor);
  const count = (s: string) => own.filter((r) => r.status === s).length;
  lines.push(
    '',
    `${count('pass')} passed, ${count('fail') + count('error')} failed, ${count('unsupported')} unsupported, ${count('skipped')} skipped as too slow (checked on ${results[0]?.checkedRows ?? o.rows} sampled rows against float64; SPEC §8 bound)`,
  );
  return `${lines.join('\n')}\n`;
}
