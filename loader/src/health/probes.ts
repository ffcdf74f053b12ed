// One health probe of one real server: a TCP connect (keepalived's TCP_CHECK) or an HTTP GET whose status code
// is compared with the expected one (HTTP_GET). A probe never rejects and never outlives its timeout: whatever
// happens, the socket is destroyed and the caller gets a ProbeResult saying why.

import net from 'node:net';
import { performance } from 'node:perf_hooks';

export interface ProbeResult {
  ok: boolean;
  durationMs: number;
  /** why it failed, or what it saw: "connected", "HTTP 200", "connection refused", "timed out after 1000 ms", "HTTP 503, expected 200" */
  detail: string;
}

export interface HttpProbeOptions {
  path: string;
  /** Host header; default the probed address (IPv6 in brackets). */
  host?: string;
  expectStatus: number;
  timeoutMs: number;
  localAddress?: string;
}

export const USER_AGENT = 'xdp-dr-health/1';

// A status line longer than this is not one a web server sends; stop reading instead of buffering a stream.
const MAX_STATUS_LINE = 4096;

const ERRNO_DETAIL: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection reset',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'timed out in the kernel',
};

function errorDetail(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.code === 'string' && ERRNO_DETAIL[e.code] !== undefined) return ERRNO_DETAIL[e.code];
  return e instanceof Error ? e.message : String(err);
}

function elapsed(start: number): number {
  return Math.round((performance.now() - start) * 10) / 10;
}

interface Attempt {
  socket?: net.Socket;
  start: number;
  timer?: NodeJS.Timeout;
  done: boolean;
  resolve: (r: ProbeResult) => void;
}

/** Settles a probe once: clears its timer and destroys its socket, whichever path got here first. */
function finish(a: Attempt, ok: boolean, detail: string): void {
  if (a.done) return;
  a.done = true;
  if (a.timer) clearTimeout(a.timer);
  a.socket?.destroy();
  a.resolve({ ok, durationMs: elapsed(a.start), detail });
}

/**
 * Opens a connection and hands it to onConnect; a timer bounds the whole attempt (connect and whatever
 * onConnect waits for), so the caller never waits longer than timeoutMs.
 */
function attempt(
  address: string,
  port: number,
  timeoutMs: number,
  localAddress: string | undefined,
  onTimeout: (connected: boolean) => string,
  onConnect: (a: Attempt, socket: net.Socket) => void,
): Promise<ProbeResult> {
  return new Promise<ProbeResult>((resolve) => {
    const a: Attempt = { start: performance.now(), done: false, resolve };
    let connected = false;
    a.timer = setTimeout(() => finish(a, false, onTimeout(connected)), Math.max(1, timeoutMs));
    try {
      const family = net.isIP(address);
      const socket = net.connect({
        host: address,
        port,
        ...(family !== 0 ? { family } : {}),
        ...(localAddress !== undefined ? { localAddress } : {}),
      });
      a.socket = socket;
      socket.on('error', (err) => finish(a, false, errorDetail(err)));
      socket.on('connect', () => {
        connected = true;
        onConnect(a, socket);
      });
    } catch (err) {
      // net.connect throws synchronously on a bad port or address; still a failed probe, not an exception.
      finish(a, false, errorDetail(err));
    }
  });
}

/** Succeeds when a TCP connection to address:port is established within timeoutMs. */
export function tcpProbe(
  address: string,
  port: number,
  timeoutMs: number,
  opts: { localAddress?: string } = {},
): Promise<ProbeResult> {
  return attempt(
    address,
    port,
    timeoutMs,
    opts.localAddress,
    () => `timed out after ${timeoutMs} ms`,
    (a) => finish(a, true, 'connected'),
  );
}

function printable(bytes: Buffer): string {
  return JSON.stringify(bytes.subarray(0, 40).toString('latin1'));
}

/**
 * Sends one HTTP/1.1 GET and succeeds when the status code equals expectStatus. Only the status line is read:
 * the connection is closed as soon as it is in, so a large or endless body costs nothing.
 */
export function httpProbe(address: string, port: number, opts: HttpProbeOptions): Promise<ProbeResult> {
  const host = opts.host ?? (net.isIPv6(address) ? `[${address}]` : address);
  // The config checks these too; a CR/LF here would inject headers into the request.
  if (!opts.path.startsWith('/') || /[\s\x00-\x1f\x7f]/.test(opts.path)) {
    return Promise.resolve({ ok: false, durationMs: 0, detail: `invalid HTTP path ${JSON.stringify(opts.path)}` });
  }
  if (host.length === 0 || /[\s\x00-\x1f\x7f]/.test(host)) {
    return Promise.resolve({ ok: false, durationMs: 0, detail: `invalid Host header ${JSON.stringify(host)}` });
  }
  const request =
    `GET ${opts.path} HTTP/1.1\r\n` +
    `Host: ${host}\r\n` +
    `User-Agent: ${USER_AGENT}\r\n` +
    'Accept: */*\r\n' +
    'Connection: close\r\n' +
    '\r\n';

  return attempt(
    address,
    port,
    opts.timeoutMs,
    opts.localAddress,
    (connected) => `timed out after ${opts.timeoutMs} ms` + (connected ? ' waiting for the HTTP status line' : ''),
    (a, socket) => {
      let seen: Buffer = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
        // Reject a non-HTTP answer on its first bytes rather than waiting for a newline that may never come.
        const prefix = Math.min(seen.length, 5);
        if (seen.subarray(0, prefix).toString('latin1') !== 'HTTP/'.slice(0, prefix)) {
          finish(a, false, `not an HTTP response: ${printable(seen)}`);
          return;
        }
        const eol = seen.indexOf(0x0a);
        if (eol < 0) {
          if (seen.length > MAX_STATUS_LINE) finish(a, false, `HTTP status line longer than ${MAX_STATUS_LINE} bytes`);
          return;
        }
        const line = seen.subarray(0, eol).toString('latin1').replace(/\r$/, '');
        const m = /^HTTP\/\d\.\d (\d{3})(?: |$)/.exec(line);
        if (!m) {
          finish(a, false, `not an HTTP status line: ${printable(seen.subarray(0, eol))}`);
          return;
        }
        const status = Number(m[1]);
        if (status === opts.expectStatus) finish(a, true, `HTTP ${status}`);
        else finish(a, false, `HTTP ${status}, expected ${opts.expectStatus}`);
      });
      socket.on('end', () =>
        finish(
          a,
          false,
          seen.length === 0
            ? 'connection closed without a response'
            : `connection closed inside the status line: ${printable(seen)}`,
        ),
      );
      socket.write(request);
    },
  );
}
