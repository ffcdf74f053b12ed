// The xdp-dr command line: one module per command, one error handler, exit codes 0 ok, 1 failure, 2 usage
// (bad arguments or config; nothing was changed).
import fs from 'node:fs';
import path from 'node:path';
import { Command, CommanderError } from 'commander';
import { ROOT } from '../dataplane/build';
import { ConfigError } from '../config';
import { UsageError } from '../errors';
import { logger } from '../log';
import { setLibbpfVerbose } from '../libbpf';
import { attachCommand, detachCommand } from './commands/attach';
import { serviceCommand } from './commands/service';
import { backendCommand } from './commands/backend';
import { listCommand } from './commands/list';
import { applyCommand } from './commands/apply';
import { simulateCommand } from './commands/simulate';
import { realserverCommand } from './commands/realserver';
import { benchCommand } from './commands/bench';
import { runCommand } from './commands/run';
import { upgradeCommand } from './commands/upgrade';

export const EXIT = { OK: 0, FAILURE: 1, USAGE: 2 } as const;

export function program(): Command {
  const p = new Command('xdp-dr')
    .description(
      'LVS direct-routing load balancer in XDP: packets for a VIP get the MAC of a real server picked by Maglev ' +
        'hashing and leave at once; the real server answers the client directly.',
    )
    .version(JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version)
    .option('-v, --verbose', 'debug output, including libbpf messages')
    .showHelpAfterError('(add --help for usage)')
    .hook('preAction', (cmd) => {
      if (cmd.opts().verbose) {
        logger.level = 'debug';
        setLibbpfVerbose(true);
      }
    });
  const commands = [
    attachCommand(), detachCommand(), serviceCommand(), backendCommand(), listCommand(), applyCommand(), simulateCommand(),
    realserverCommand(), runCommand(), upgradeCommand(), benchCommand(),
  ];
  for (const c of commands)
    p.addCommand(c);
  // Subcommands inherit the usage-error behaviour; commander's own errors become exit code 2.
  const strict = (c: Command): void => {
    c.exitOverride();
    c.showHelpAfterError('(add --help for usage)');
    c.commands.forEach(strict);
  };
  strict(p);
  return p;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv);
    // A command may report a finding without failing (realserver check sets 1).
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version end here too, with code 0; commander has already printed the message.
      return e.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
    }
    if (e instanceof UsageError || e instanceof ConfigError) {
      process.stderr.write(`xdp-dr: ${e.message.split('\n').join('\nxdp-dr: ')}\n`);
      return EXIT.USAGE;
    }
    const err = e as Error;
    process.stderr.write(`xdp-dr: error: ${err.message ?? String(e)}\n`);
    if (logger.enabled('debug') && err.stack) process.stderr.write(`${err.stack}\n`);
    return EXIT.FAILURE;
  }
}

if (require.main === module) {
  main(process.argv).then((code) => {
    process.exitCode = code;
  });
}
