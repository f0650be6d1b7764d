/** Number formatting and plain (colourless) tables for the reports. */
import Table from 'cli-table3';

/** Milliseconds with about three significant digits. */
export function fmtMs(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '—';
  if (ms >= 100) return ms.toFixed(0);
  if (ms >= 10) return ms.toFixed(1);
  if (ms >= 1) return ms.toFixed(2);
  return ms.toPrecision(2);
}

/** A rate with three significant digits. */
export function fmtRate(x: number | undefined, unit: string): string {
  if (x === undefined || !Number.isFinite(x)) return '—';
  const text = x >= 100 ? x.toFixed(0) : x >= 0.01 ? x.toPrecision(3) : x.toExponential(1);
  return `${text} ${unit}`;
}

/** An error magnitude: "0", "3.1e-7", "NaN". */
export function fmtError(e: number | undefined): string {
  if (e === undefined) return '—';
  if (Number.isNaN(e)) return 'NaN';
  if (e === 0) return '0';
  return e.toExponential(1);
}

/** A table without colours (the output is often piped or pasted into docs). */
export function makeTable(head: string[], colAligns?: ('left' | 'right' | 'center')[]): Table.Table {
  return new Table({
    head,
    style: { head: [], border: [], compact: true },
    ...(colAligns ? { colAligns } : {}),
  });
}
