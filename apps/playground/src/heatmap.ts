/** Attention heatmaps on a canvas: rows are queries, columns keys, colour the probability. */

// Viridis at 9 stops; linear interpolation between them.
const STOPS: [number, number, number][] = [
  [68, 1, 84],
  [71, 44, 122],
  [59, 81, 139],
  [44, 113, 142],
  [33, 144, 141],
  [39, 173, 129],
  [92, 200, 99],
  [170, 220, 50],
  [253, 231, 37],
];

export function viridis(t: number): [number, number, number] {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  const a = STOPS[i];
  const b = STOPS[i + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}

export const VIRIDIS_CSS = `linear-gradient(to right, ${STOPS.map((c) => `rgb(${c.join(',')})`).join(', ')})`;

export interface HeatmapOptions {
  /** Largest value, for the colour scale; default the data's max. */
  max?: number;
  /** Cells to outline: [row0, col0, rows, cols] in data cells. */
  highlight?: { r: number; c: number; h: number; w: number; color: string }[];
  /** Cells that are masked (drawn grey). */
  masked?: (r: number, c: number) => boolean;
  /** Canvas side in CSS pixels. */
  size?: number;
}

/** Draws a rows×cols matrix (row-major) into the canvas, each cell a rectangle; returns the max used. */
export function drawHeatmap(
  canvas: HTMLCanvasElement,
  data: ArrayLike<number>,
  rows: number,
  cols: number,
  o: HeatmapOptions = {},
): number {
  const size = o.size ?? 320;
  const cell = Math.max(1, Math.floor(size / Math.max(rows, cols)));
  const w = cell * cols;
  const h = cell * rows;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  const ctx = canvas.getContext('2d');
  if (!ctx) return 0;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  let max = o.max ?? 0;
  if (o.max == null) for (let i = 0; i < rows * cols; i++) if (data[i] > max) max = data[i];
  const scale = max > 0 ? 1 / max : 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      if (o.masked?.(r, c)) ctx.fillStyle = '#d1d5db';
      else {
        const [R, G, B] = viridis(data[r * cols + c] * scale);
        ctx.fillStyle = `rgb(${R | 0},${G | 0},${B | 0})`;
      }
      ctx.fillRect(c * cell, r * cell, cell, cell);
    }
  }
  if (cell >= 12) {
    ctx.strokeStyle = 'rgba(255,255,255,0.35)';
    ctx.lineWidth = 1;
    for (let r = 0; r <= rows; r++) {
      ctx.beginPath();
      ctx.moveTo(0, r * cell + 0.5);
      ctx.lineTo(w, r * cell + 0.5);
      ctx.stroke();
    }
    for (let c = 0; c <= cols; c++) {
      ctx.beginPath();
      ctx.moveTo(c * cell + 0.5, 0);
      ctx.lineTo(c * cell + 0.5, h);
      ctx.stroke();
    }
  }
  for (const hl of o.highlight ?? []) {
    ctx.strokeStyle = hl.color;
    ctx.lineWidth = 3;
    ctx.strokeRect(hl.c * cell + 1.5, hl.r * cell + 1.5, hl.w * cell - 3, hl.h * cell - 3);
  }
  return max;
}
