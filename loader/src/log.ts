// One logger for the whole control plane: human lines by default, JSON lines for machines.
export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LoggerOptions {
  level?: Level;
  format?: 'human' | 'json';
  sink?: (line: string) => void;
}

export class Logger {
  level: Level;
  format: 'human' | 'json';
  private sink: (line: string) => void;

  constructor(opts: LoggerOptions = {}) {
    this.level = opts.level ?? 'info';
    this.format = opts.format ?? 'human';
    this.sink = opts.sink ?? ((line) => process.stderr.write(line + '\n'));
  }

  /** Where lines go; returns the previous sink so that a caller can put it back. */
  setSink(sink: (line: string) => void): (line: string) => void {
    const prev = this.sink;
    this.sink = sink;
    return prev;
  }

  enabled(level: Level): boolean {
    return ORDER[level] >= ORDER[this.level];
  }

  log(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
    if (!this.enabled(level)) return;
    if (this.format === 'json') {
      this.sink(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }));
      return;
    }
    const extra = Object.entries(fields)
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    this.sink(`${level.padEnd(5)} ${msg}${extra ? ' ' + extra : ''}`);
  }

  debug(msg: string, fields?: Record<string, unknown>): void { this.log('debug', msg, fields); }
  info(msg: string, fields?: Record<string, unknown>): void { this.log('info', msg, fields); }
  warn(msg: string, fields?: Record<string, unknown>): void { this.log('warn', msg, fields); }
  error(msg: string, fields?: Record<string, unknown>): void { this.log('error', msg, fields); }
}

export const logger = new Logger({ level: process.env.XDP_DR_LOG_LEVEL as Level | undefined });
