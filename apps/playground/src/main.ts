import './style.css';
import { initCompare } from './compare.js';
import { initCost } from './cost.js';
import { byId, el } from './format.js';
import { VIRIDIS_CSS } from './heatmap.js';
import { initRun } from './run.js';
import { initSee } from './see.js';

const TABS = ['run', 'compare', 'see', 'cost'] as const;
type Tab = (typeof TABS)[number];

const shown = new Set<Tab>();
const onShow: Partial<Record<Tab, () => void>> = {};

function show(tab: Tab): void {
  for (const t of TABS) {
    byId(`tab-${t}`).hidden = t !== tab;
    const b = byId(`tab-btn-${t}`);
    b.setAttribute('aria-selected', String(t === tab));
    b.classList.toggle('active', t === tab);
  }
  if (location.hash !== `#${tab}`) history.replaceState(null, '', `#${tab}`);
  // Charts measure their container: draw them the first time their tab is visible.
  if (!shown.has(tab)) {
    shown.add(tab);
    onShow[tab]?.();
  }
}

function tabFromHash(): Tab {
  const h = location.hash.slice(1);
  return (TABS as readonly string[]).includes(h) ? (h as Tab) : 'run';
}

function envLine(): void {
  const iso = globalThis.crossOriginIsolated === true;
  const gpu = 'gpu' in navigator;
  byId('env').replaceChildren(
    el('span', {
      class: iso ? 'pill ok' : 'pill warn',
      id: 'env-isolated',
      'data-isolated': String(iso),
      title: iso
        ? 'SharedArrayBuffer is available: the threaded backends can use workers'
        : 'Not cross-origin isolated: the threaded backends fall back to one thread',
      text: iso ? 'cross-origin isolated' : 'not cross-origin isolated',
    }),
    el('span', { class: 'pill', text: `${navigator.hardwareConcurrency ?? '?'} logical cores` }),
    el('span', { class: gpu ? 'pill ok' : 'pill', text: gpu ? 'navigator.gpu present' : 'no navigator.gpu' }),
  );
}

async function main(): Promise<void> {
  envLine();
  for (const bar of document.querySelectorAll<HTMLElement>('.colorbar i')) bar.style.background = VIRIDIS_CSS;
  for (const t of TABS) byId(`tab-btn-${t}`).addEventListener('click', () => show(t));
  window.addEventListener('hashchange', () => show(tabFromHash()));
  onShow.compare = initCompare();
  onShow.see = initSee();
  onShow.cost = initCost();
  const runReady = initRun();
  show(tabFromHash());
  await runReady;
  document.body.dataset.ready = 'true';
}

main().catch((e) => {
  byId('env').append(el('span', { class: 'pill bad', text: `failed to start: ${String(e)}` }));
});
