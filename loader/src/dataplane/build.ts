// Compiles the BPF programs with clang: the one place that knows the flags. `make` and the loader both come here,
// and the loader rebuilds on demand when the object is missing or older than its sources.
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';

export const ROOT = path.resolve(__dirname, '../../../..');
export const BPF_DIR = path.join(ROOT, 'bpf');
export const BUILD_DIR = path.join(ROOT, 'build');

/** Build-time limits of the data path (bpf/xdp_dr_limits.h); any of them may be overridden. */
export interface BuildOptions {
  MAX_SERVICES?: number;
  MAX_BACKENDS?: number;
  MAGLEV_M?: number;
  MAX_TX_PORTS?: number;
  MAX_CONNS?: number;
  CONN_IDLE_TIMEOUT_S?: number;
  CONN_CLOSING_TIMEOUT_S?: number;
  /** Benchmarks only: XDP_TX right after stage 1..4 of the fast path (bpf/xdp_dr.bpf.c, bench_stage_end). */
  BENCH_STAGE?: number;
}

const OPTION_NAMES = ['MAX_SERVICES', 'MAX_BACKENDS', 'MAGLEV_M', 'MAX_TX_PORTS', 'MAX_CONNS', 'CONN_IDLE_TIMEOUT_S', 'CONN_CLOSING_TIMEOUT_S', 'BENCH_STAGE'];
/** Options that make a program for benchmarks alone, never for a NIC. */
export const BENCH_ONLY_OPTIONS = ['BENCH_STAGE'];

const ARCH_INCLUDE = `/usr/include/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`;

export function clangArgs(source: string, output: string, defines: BuildOptions = {}): string[] {
  const d = Object.entries(defines)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `-D${k}=${v}`);
  // -g keeps BTF, which libbpf needs for map definitions and the loader for layouts and constants.
  return ['-g', '-O2', '-target', 'bpf', '-Wall', '-Werror', `-I${ARCH_INCLUDE}`, `-I${BPF_DIR}`, ...d, '-c', source, '-o', output];
}

function newestSource(): number {
  return Math.max(...fs.readdirSync(BPF_DIR).map((f) => fs.statSync(path.join(BPF_DIR, f)).mtimeMs));
}

function validate(defines: BuildOptions): void {
  for (const [k, v] of Object.entries(defines)) {
    if (v === undefined) continue;
    if (!OPTION_NAMES.includes(k)) throw new Error(`unknown build option ${k}: use one of ${OPTION_NAMES.join(', ')}`);
    if (!Number.isInteger(v) || v < 1 || v > 1 << 24) throw new Error(`build option ${k}=${v} must be an integer in 1..16777216`);
    if (k === 'BENCH_STAGE' && v > 4) throw new Error(`build option BENCH_STAGE=${v}: the fast path has stages 1..4`);
    if (k === 'MAX_CONNS' && (v % 4 || v < 8))
      throw new Error(`build option MAX_CONNS=${v} must be a multiple of 4 and at least 8: the connection table is made of buckets of 4 records`);
  }
}

/** Object path for a program and its options: default options keep the plain name that `make` produces. */
export function objectPath(program: string, defines: BuildOptions = {}): string {
  const set = Object.entries(defines).filter(([, v]) => v !== undefined).sort();
  if (!set.length) return path.join(BUILD_DIR, `${program}.bpf.o`);
  const tag = createHash('sha256').update(JSON.stringify(set)).digest('hex').slice(0, 12);
  return path.join(BUILD_DIR, `${program}-${tag}.bpf.o`);
}

export class BuildError extends Error {
  override name = 'BuildError';
}

/** Returns the object for `program` (bpf/<program>.bpf.c), compiling it when missing or stale. */
export function ensureObject(program = 'xdp_dr', defines: BuildOptions = {}, force = false): string {
  validate(defines);
  const out = objectPath(program, defines);
  const src = path.join(BPF_DIR, `${program}.bpf.c`);
  if (!fs.existsSync(src)) throw new BuildError(`no BPF source ${src}`);
  if (!force && fs.existsSync(out) && fs.statSync(out).mtimeMs >= newestSource()) return out;
  fs.mkdirSync(BUILD_DIR, { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  try {
    execFileSync('clang', clangArgs(src, tmp, defines), { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    if (err.code === 'ENOENT')
      throw new BuildError('clang is not installed: apt-get install clang llvm libbpf-dev (or run the README set-up: make setup)');
    const said = err.stderr?.toString().trim() ?? err.message;
    const missing = /fatal error: '([^']+)' file not found/.exec(said);
    const hint = missing
      ? `\nhint: a header is missing (${missing[1]}): apt-get install libbpf-dev linux-libc-dev`
      : '';
    throw new BuildError(`clang failed to compile ${path.relative(ROOT, src)}:\n${said}${hint}`);
  }
  fs.renameSync(tmp, out);
  return out;
}

if (require.main === module) {
  // `node build.js [program...]`: what `make` runs.
  const programs = process.argv.slice(2);
  for (const p of programs.length ? programs : ['xdp_dr', 'xdp_min', 'xdp_ref_dr', 'xdp_pass', 'xdp_gen', 'xdp_sink']) {
    try {
      console.log(path.relative(ROOT, ensureObject(p, {}, true)));
    } catch (e) {
      console.error((e as Error).message);
      process.exit(1);
    }
  }
}
