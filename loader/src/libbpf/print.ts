// Routes libbpf's own log into our logger, and remembers its latest warnings so that errors can quote them.
import { fn, koffi, PrintFn } from './ffi';
import { logger } from '../log';

const LIBBPF_WARN = 0;
const RECENT_MAX = 8;

let recent: string[] = [];
let verbose = false;
const buf = Buffer.alloc(4096);

function onPrint(level: number, fmt: string, args: unknown): number {
  const n = fn.vsnprintf(buf, buf.length, fmt, args);
  const text = buf.subarray(0, Math.max(0, Math.min(n, buf.length - 1))).toString('utf8').trimEnd();
  if (!text) return 0;
  if (level === LIBBPF_WARN) {
    recent.push(text);
    if (recent.length > RECENT_MAX) recent.shift();
  }
  // libbpf's warnings are often expected probes: show them one level down, and everything only when verbose.
  if (verbose || level === LIBBPF_WARN) logger.debug(text.startsWith('libbpf: ') ? text : `libbpf: ${text}`);
  return n;
}

const callback = koffi.register(onPrint, koffi.pointer(PrintFn));
fn.libbpf_set_print(callback);

export function setLibbpfVerbose(on: boolean): void {
  verbose = on;
}

// The warnings since the last call, joined; cleared so that they are quoted once.
export function recentLibbpfMessages(): string | undefined {
  const out = recent.length ? recent.join('\n') : undefined;
  recent = [];
  return out;
}

export function clearLibbpfMessages(): void {
  recent = [];
}
