/** Log–log line charts with uPlot (axes, ticks, legend and cursor are uPlot's). */
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4b5563'];

export interface SeriesSpec {
  label: string;
  /** One value per x; null = no point (refused, skipped, not run). */
  values: (number | null)[];
  color?: string;
  dash?: number[];
}

export interface Marker {
  /** A vertical line at this x... */
  x?: number;
  /** ...or a horizontal one at this y. */
  y?: number;
  label: string;
  color?: string;
}

export interface ChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  xs: number[];
  series: SeriesSpec[];
  yFormat?: (v: number) => string;
  /** Tick labels, where they should be shorter than the legend's values. */
  yTickFormat?: (v: number) => string;
  xFormat?: (v: number) => string;
  markers?: Marker[];
  /** Base of the logarithmic y axis: 2 puts ticks on powers of two (bytes), 10 on decades. */
  yLog?: 2 | 10;
  width?: number;
  height?: number;
}

/** Draws dashed reference lines (the O(N²) wall, a memory limit) on uPlot's canvas, in data coordinates. */
function markerPlugin(markers: Marker[]): uPlot.Plugin {
  return {
    hooks: {
      draw: [
        (u: uPlot) => {
          const ctx = u.ctx;
          const { left, top, width, height } = u.bbox;
          ctx.save();
          ctx.setLineDash([6, 4]);
          ctx.lineWidth = 2 * devicePixelRatio;
          ctx.font = `${12 * devicePixelRatio}px system-ui, sans-serif`;
          for (const m of markers) {
            ctx.strokeStyle = m.color ?? '#b91c1c';
            ctx.fillStyle = m.color ?? '#b91c1c';
            ctx.beginPath();
            if (m.x != null) {
              const px = u.valToPos(m.x, 'x', true);
              if (px < left || px > left + width) continue;
              ctx.moveTo(px, top);
              ctx.lineTo(px, top + height);
              ctx.stroke();
              ctx.textAlign = px > left + width * 0.6 ? 'right' : 'left';
              const dx = px > left + width * 0.6 ? -6 : 6;
              ctx.fillText(m.label, px + dx * devicePixelRatio, top + 16 * devicePixelRatio);
            } else if (m.y != null) {
              const py = u.valToPos(m.y, 'y', true);
              if (py < top || py > top + height) continue;
              ctx.moveTo(left, py);
              ctx.lineTo(left + width, py);
              ctx.stroke();
              ctx.textAlign = 'left';
              ctx.fillText(m.label, left + 6 * devicePixelRatio, py - 6 * devicePixelRatio);
            }
          }
          ctx.restore();
        },
      ],
    },
  };
}

/**
 * Ticks and grid lines only at whole powers of the base (no 2…9 stripes between decades), and on a
 * base-2 axis only every 1st, 2nd, 5th or 10th power, so that at most 8 are labelled.
 */
function thinLogSplits(splits: number[], base: 2 | 10): (number | null)[] {
  const exp = (v: number) => Math.log(v) / Math.log(base);
  const whole = splits.filter((v) => v > 0 && Math.abs(exp(v) - Math.round(exp(v))) < 1e-9);
  const step = [1, 2, 5, 10].find((k) => whole.length / k <= 8) ?? 10;
  return splits.map((v) => (whole.includes(v) && Math.round(exp(v)) % step === 0 ? v : null));
}

/** Replaces the content of `host` with a log–log chart. Returns the uPlot instance. */
export function logLogChart(host: HTMLElement, spec: ChartSpec): uPlot {
  host.replaceChildren();
  const width = spec.width ?? Math.max(320, Math.min(host.clientWidth || 560, 640));
  const series: uPlot.Series[] = [
    { label: spec.xLabel, value: (_u, v) => (v == null ? '—' : (spec.xFormat ?? String)(v)) },
    ...spec.series.map((s, i) => ({
      label: s.label,
      stroke: s.color ?? PALETTE[i % PALETTE.length],
      width: 2,
      dash: s.dash,
      points: { show: true, size: 6 },
      spanGaps: false,
      value: (_u: uPlot, v: number | null) => (v == null ? '—' : (spec.yFormat ?? String)(v)),
    })),
  ];
  // uPlot needs positive values on log scales: drop anything that is not.
  const clean = (vs: (number | null)[]) =>
    vs.map((v) => (v != null && v > 0 && Number.isFinite(v) ? v : null));
  const data = [spec.xs, ...spec.series.map((s) => clean(s.values))] as uPlot.AlignedData;
  const opts: uPlot.Options = {
    title: spec.title,
    width,
    height: spec.height ?? 300,
    scales: { x: { distr: 3, log: 2 }, y: { distr: 3, log: spec.yLog ?? 10 } },
    axes: [
      {
        label: spec.xLabel,
        values: (_u, ticks) => ticks.map((t) => (t == null ? '' : (spec.xFormat ?? String)(t))),
      },
      {
        label: spec.yLabel,
        size: 70,
        filter: (_u, splits) => thinLogSplits(splits, spec.yLog ?? 10),
        grid: { filter: (_u, splits) => thinLogSplits(splits, spec.yLog ?? 10) },
        ticks: { filter: (_u, splits) => thinLogSplits(splits, spec.yLog ?? 10) },
        values: (_u, ticks) =>
          ticks.map((t) => (t == null ? '' : (spec.yTickFormat ?? spec.yFormat ?? String)(t))),
      },
    ],
    series,
    legend: { live: true },
    plugins: spec.markers?.length ? [markerPlugin(spec.markers)] : [],
  };
  return new uPlot(opts, data, host);
}
