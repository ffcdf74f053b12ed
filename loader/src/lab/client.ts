// The client side of the demo and the tests: opens N new TCP connections to a VIP (each from its own source
// port, so each is a new flow for the load balancer), makes one HTTP request on each, and prints which real
// server answered, as JSON.
import http from 'node:http';

const [host, countStr, portBaseStr, concurrencyStr] = process.argv.slice(2);
const count = Number(countStr ?? 100);
const portBase = Number(portBaseStr ?? 20000);
const concurrency = Number(concurrencyStr ?? 16);

function one(localPort: number): Promise<string> {
  return new Promise((resolve) => {
    const req = http.request({ host, port: 80, path: '/', agent: false, localPort, timeout: 3000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body.trim()));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve(`error: ${e.message}`));
    req.end();
  });
}

async function main(): Promise<void> {
  const counts: Record<string, number> = {};
  const errors: string[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const port = portBase + next++;
      const who = await one(port);
      if (who.startsWith('error: ')) errors.push(`${port}: ${who.slice(7)}`);
      else counts[who] = (counts[who] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  process.stdout.write(JSON.stringify({ counts, errors }) + '\n');
}

main();
