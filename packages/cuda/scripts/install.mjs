#!/usr/bin/env node
// Builds the CUDA addon at install time when nvcc is found; otherwise says why and exits 0, so that
// `pnpm install` never fails for lack of CUDA. The outcome is written to build/install-status.json,
// which the backend reads to explain a "not built" state.
//
//   node scripts/install.mjs [--force]
//   FLASHATTN_CUDA_SKIP_BUILD=1   skip the build
//   FLASHATTN_CUDA_ARCHS="80;90"  CUDA architectures (default 80;90)
//   FLASHATTN_CUDA_JOBS=N         parallel compile jobs (default: min(cores, 4))
//   FLASHATTN_CUDA_TUNE=1         also build the tile-configuration variants the benchmarks compare
//   FLASHATTN_CUDA_PTXAS=1        print the compiler's register / shared-memory report
//   FLASHATTN_CUDA_NO_DEFAULT_CUDA=1  do not look in /usr/local/cuda (tests of the skip path)
//   FLASHATTN_CUDA_BUILD_DIR=dir  build elsewhere than build/ (then point FLASHATTN_CUDA_ADDON at the .node)
import { spawnSync } from 'node:child_process';
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const buildDir = path.resolve(process.env.FLASHATTN_CUDA_BUILD_DIR || path.join(pkgDir, 'build'));
const statusFile = path.join(buildDir, 'install-status.json');
const force = process.argv.includes('--force');
const started = Date.now();

function log(msg) {
  console.log(`@flashattn/cuda: ${msg}`);
}

function writeStatus(status) {
  try {
    mkdirSync(buildDir, { recursive: true });
    writeFileSync(statusFile, `${JSON.stringify({ ...status, date: new Date().toISOString() }, null, 2)}\n`);
  } catch {
    // a read-only install location: the backend then says only "not built"
  }
}

function skip(reason) {
  log(
    `the CUDA addon is not built: ${reason}. The cuda backend will report "not built"; the other backends work.`,
  );
  writeStatus({ built: false, reason });
  process.exit(0);
}

function isExecutable(file) {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** nvcc from CUDACXX, PATH, CUDA_HOME / CUDA_PATH, or /usr/local/cuda/bin. */
export function findNvcc(env = process.env) {
  const candidates = [];
  if (env.CUDACXX) candidates.push(env.CUDACXX);
  for (const dir of (env.PATH ?? '').split(path.delimiter)) if (dir) candidates.push(path.join(dir, 'nvcc'));
  for (const root of [env.CUDA_HOME, env.CUDA_PATH])
    if (root) candidates.push(path.join(root, 'bin', 'nvcc'));
  if (env.FLASHATTN_CUDA_NO_DEFAULT_CUDA !== '1') candidates.push('/usr/local/cuda/bin/nvcc');
  return candidates.find((c) => existsSync(c) && isExecutable(c)) ?? null;
}

function findOnPath(name, env = process.env) {
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    const file = path.join(dir, name);
    if (dir && existsSync(file) && isExecutable(file)) return file;
  }
  return null;
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** One build at a time in build/ (several `pnpm install`s may run this script at once). */
function lock() {
  mkdirSync(buildDir, { recursive: true });
  const file = path.join(buildDir, '.install-lock');
  const deadline = Date.now() + 60 * 60 * 1000;
  let said = false;
  for (;;) {
    try {
      const fd = openSync(file, 'wx');
      writeFileSync(fd, String(process.pid));
      closeSync(fd);
      const release = () => rmSync(file, { force: true });
      process.on('exit', release);
      return;
    } catch {
      let pid = 0;
      try {
        pid = Number(readFileSync(file, 'utf8'));
      } catch {}
      if (!pid || !alive(pid) || Date.now() > deadline) {
        rmSync(file, { force: true });
        continue;
      }
      if (!said) log(`another build (pid ${pid}) is running in ${buildDir}; waiting for it`);
      said = true;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2000);
    }
  }
}

function main() {
  if (process.env.FLASHATTN_CUDA_SKIP_BUILD === '1' && !force) skip('FLASHATTN_CUDA_SKIP_BUILD=1 is set');
  if (process.platform !== 'linux') skip(`the addon is built on Linux only (this is ${process.platform})`);
  const nvcc = findNvcc();
  if (!nvcc)
    skip(
      'nvcc was not found (looked at $CUDACXX, $PATH, $CUDA_HOME/bin, $CUDA_PATH/bin and /usr/local/cuda/bin)',
    );
  const cmake = findOnPath('cmake');
  if (!cmake) skip(`nvcc is at ${nvcc} but cmake is not on PATH (cmake >= 3.18 is needed)`);
  const require = createRequire(import.meta.url);
  let cmakeJs;
  try {
    cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  } catch {
    skip('the cmake-js package is missing (reinstall @flashattn/cuda with its dependencies)');
  }
  const archs = process.env.FLASHATTN_CUDA_ARCHS || '80;90';
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  const jobs = Number(process.env.FLASHATTN_CUDA_JOBS) || Math.max(1, Math.min(cores, 4));
  const nvccDir = path.dirname(nvcc);
  const env = {
    ...process.env,
    CUDACXX: nvcc,
    PATH: `${nvccDir}${path.delimiter}${process.env.PATH ?? ''}`,
    CMAKE_BUILD_PARALLEL_LEVEL: String(jobs),
  };
  // Node's own headers, for tools that want them (cmake-js uses node-api-headers for Node-API).
  const nodeInclude = path.join(path.dirname(path.dirname(process.execPath)), 'include', 'node');
  if (existsSync(nodeInclude) && !env.npm_config_nodedir)
    env.npm_config_nodedir = path.dirname(path.dirname(nodeInclude));
  const args = [
    cmakeJs,
    'build',
    '--directory',
    pkgDir,
    '--out',
    buildDir,
    '--parallel',
    String(jobs),
    `--CDCMAKE_CUDA_ARCHITECTURES=${archs}`,
    `--CDCMAKE_CUDA_COMPILER=${nvcc}`,
  ];
  if (process.env.FLASHATTN_CUDA_TUNE === '1') args.push('--CDFA_TUNE=ON');
  if (process.env.FLASHATTN_CUDA_PTXAS === '1') args.push('--CDFA_PTXAS_VERBOSE=ON');
  lock();
  log(`building the CUDA addon with ${nvcc} for sm_${archs.split(';').join(', sm_')} (${jobs} jobs) ...`);
  const r = spawnSync(process.execPath, args, { cwd: pkgDir, env, stdio: 'inherit' });
  const seconds = Math.round((Date.now() - started) / 100) / 10;
  const addon = path.join(buildDir, 'Release', 'flashattn_cuda.node');
  if (r.status !== 0 || !existsSync(addon)) {
    const reason = `the build failed (cmake-js exit ${r.status ?? r.signal}) after ${seconds} s; see the log above`;
    log(`ERROR: ${reason}`);
    writeStatus({ built: false, reason, nvcc, cmake, seconds, buildFailed: true });
    process.exit(0);
  }
  log(`built ${path.relative(pkgDir, addon)} in ${seconds} s`);
  writeStatus({ built: true, nvcc, cmake, archs, seconds });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
