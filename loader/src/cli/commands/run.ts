// xdp-dr run: the daemon (health checks, metrics, reloads) in the foreground, for systemd or a terminal.
import { Command } from 'commander';
import { Daemon } from '../../daemon/daemon';
import { logger } from '../../log';
import { UsageError } from '../../errors';
import { examples } from '../common';

interface Opts {
  config: string;
  metricsAddress: string;
  detachOnExit?: boolean;
  logFormat: string;
  surveyInterval: string;
}

export function runCommand(): Command {
  return examples(
    new Command('run')
      .description(
        'run the load balancer as a service in the foreground: attach (or adopt what runs), apply the config, ' +
          'health-check the real servers, serve metrics; reload on SIGHUP or when the file changes. On SIGTERM/SIGINT ' +
          'the load balancer keeps forwarding from its pinned state unless --detach-on-exit.',
      )
      .requiredOption('-c, --config <file>', 'the config file')
      .option('--metrics-address <host:port>', 'where to serve /metrics ("" for none)', '127.0.0.1:9642')
      .option('--detach-on-exit', 'detach and remove the pinned state when stopping')
      .option('--log-format <format>', 'human | json', 'human')
      .option('--survey-interval <ms>', 'how often interfaces, pins and real-server MACs are looked at (0 = never); a real server\'s changed MAC is ' +
        'followed within 2 intervals + the kernel\'s unicast re-probe (3 s by default) + 2 s', '2000')
      .action(async (o: Opts) => {
        if (o.logFormat !== 'human' && o.logFormat !== 'json') throw new UsageError(`--log-format: '${o.logFormat}' is not human | json`);
        logger.format = o.logFormat;
        const surveyMs = Number(o.surveyInterval);
        if (!Number.isInteger(surveyMs) || surveyMs < 0) throw new UsageError(`--survey-interval: '${o.surveyInterval}' is not a number of milliseconds`);
        const daemon = new Daemon({ configFile: o.config, metricsAddress: o.metricsAddress, detachOnExit: !!o.detachOnExit, surveyMs });
        await daemon.start();
        logger.info('running', { config: o.config });
        await new Promise<void>((resolve) => {
          const stop = (sig: string) => {
            // A stop is bounded: whatever still holds the process (a probe, a socket) must not keep a service
            // manager waiting. The load balancer itself does not depend on this process.
            setTimeout(() => {
              logger.warn('stop took longer than 5 s; exiting anyway', { pending: process.getActiveResourcesInfo() });
              process.exit(0);
            }, 5000).unref();
            void daemon.stop(sig).then(() => {
              resolve();
              // Exit once stopped, even if a handle outlives the stop.
              setImmediate(() => process.exit(process.exitCode ?? 0));
            });
          };
          process.once('SIGTERM', () => stop('SIGTERM'));
          process.once('SIGINT', () => stop('SIGINT'));
        });
      }),
    ['xdp-dr run -c /etc/xdp-dr/lb.yaml', 'xdp-dr run -c lb.yaml --metrics-address [::1]:9642 --log-format json'],
  );
}
