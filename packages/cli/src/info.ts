/** `flashattn info`: what is installed, what can run here and why not. */
import { ALL_FEATURES, type Capabilities, disposeBackends, getBackend, listBackends } from '@flashattn/core';
import {
  detailsOf,
  importOptional,
  loadBackendPackages,
  noteOf,
  type PackageStatus,
  packageVersion,
  readyBackend,
  threadsOf,
} from './backends.js';
import { loadOrt } from './bench/anchors.js';
import { makeTable } from './format.js';
import type { Io } from './io.js';
import { type MachineInfo, machineInfo } from './machine.js';

export interface BackendInfo {
  name: string;
  priority: number;
  available: boolean;
  reason?: string;
  threads?: number;
  capabilities?: Capabilities;
  /** How it runs here: listBackends()' note (the backend's `info` line). */
  note?: string;
  /** The fields of a backend's `info` when it is an object (variant, threads, adapter ...). */
  details?: Record<string, string | number | boolean>;
}

export interface InfoReport {
  version?: string;
  machine: MachineInfo;
  packages: PackageStatus[];
  tools: { pkg: string; purpose: string; installed: boolean; version?: string; error?: string }[];
  /** The backend 'auto' picks. */
  auto?: string;
  backends: BackendInfo[];
}

export async function gatherInfo(): Promise<InfoReport> {
  const packages = await loadBackendPackages();
  const statuses = await listBackends();
  const backends: BackendInfo[] = [];
  for (const s of statuses) {
    const info: BackendInfo = { ...s };
    if (s.available) {
      const b = await getBackend(s.name);
      await readyBackend(b).catch(() => {});
      info.note = noteOf(b) ?? s.note;
      info.capabilities = b.capabilities;
      info.threads = threadsOf(b);
      info.details = detailsOf(b);
    }
    backends.push(info);
  }
  const conf = await importOptional('@flashattn/conformance/cases');
  const ort = await loadOrt();
  const tools: InfoReport['tools'] = [
    {
      pkg: '@flashattn/conformance',
      purpose: 'verify',
      installed: conf.installed,
      version: conf.installed ? packageVersion('@flashattn/conformance') : undefined,
      error: conf.error,
    },
    {
      pkg: 'onnxruntime-node',
      purpose: 'bench --anchors',
      installed: !ort.error?.includes('not installed'),
      version: ort.version,
      error: ort.error?.includes('not installed') ? undefined : ort.error,
    },
  ];
  return {
    version: packageVersion('@flashattn/cli'),
    machine: machineInfo(),
    packages,
    tools,
    auto: statuses.find((s) => s.available)?.name,
    backends,
  };
}

function featuresCell(c: Capabilities): string {
  const missing = ALL_FEATURES.filter((f) => !c.features.includes(f));
  if (missing.length === 0) return `all ${ALL_FEATURES.length}`;
  if (c.features.length === 0) return 'none';
  return `${c.features.join(', ')}\n(not: ${missing.join(', ')})`;
}

export function renderInfo(r: InfoReport): string {
  const m = r.machine;
  const lines: string[] = [];
  lines.push(`flashattn ${r.version ?? ''}`.trim());
  lines.push(`Node ${m.node} (V8 ${m.v8}), ${m.platform} ${m.arch}`);
  lines.push(
    `CPU: ${m.cpuModel}, ${m.cores} logical cores (${m.availableParallelism} available), ${m.memoryGiB} GiB`,
  );
  if (m.gitCommit) lines.push(`commit ${m.gitCommit}${m.gitDirty ? ' (modified)' : ''}`);

  const pk = makeTable(['package', 'version', 'status']);
  for (const p of r.packages) {
    const status = !p.installed
      ? 'not installed'
      : p.loaded
        ? `loaded: registers '${p.backend}'`
        : `failed to load: ${p.error}`;
    pk.push([p.pkg, p.version ?? '—', wrap(status, 70)]);
  }
  for (const t of r.tools) {
    const status = !t.installed
      ? `not installed (for ${t.purpose})`
      : t.error
        ? `failed to load: ${t.error}`
        : `loaded (for ${t.purpose})`;
    pk.push([t.pkg, t.version ?? '—', wrap(status, 70)]);
  }
  lines.push('', pk.toString());

  const bt = makeTable([
    'backend',
    'priority',
    'available',
    'threads',
    'dtypes',
    'max d',
    'features / why not',
  ]);
  for (const b of r.backends) {
    if (b.available && b.capabilities) {
      bt.push([
        b.name,
        String(b.priority),
        'yes',
        b.threads !== undefined ? String(b.threads) : '—',
        b.capabilities.dtypes.join(', '),
        String(b.capabilities.maxHeadDim),
        featuresCell(b.capabilities),
      ]);
    } else {
      bt.push([b.name, String(b.priority), 'no', '—', '—', '—', wrap(b.reason ?? 'no reason given', 60)]);
    }
  }
  lines.push('', `Backends, highest priority first ('auto' picks ${r.auto ?? 'none'}):`, bt.toString());
  for (const b of r.backends) {
    if (b.note) lines.push(`${b.name}: ${b.note}`);
    else if (b.details)
      lines.push(
        `${b.name}: ${Object.entries(b.details)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ')}`,
      );
  }
  return `${lines.join('\n')}\n`;
}

/** Breaks a long line at spaces so table cells stay narrow. */
function wrap(text: string, width: number): string {
  const words = text.split(' ');
  const out: string[] = [];
  let line = '';
  for (const w of words) {
    if (line && line.length + 1 + w.length > width) {
      out.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) out.push(line);
  return out.join('\n');
}

export async function infoCommand(opts: { json?: boolean }, io: Io): Promise<number> {
  try {
    const report = await gatherInfo();
    io.out(opts.json ? `${JSON.stringify(report, null, 2)}\n` : renderInfo(report));
    return 0;
  } finally {
    await disposeBackends();
  }
}
