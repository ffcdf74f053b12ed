// Holds one TCP connection to a VIP open: makes a request on it, prints which real server answered, and makes
// another request on the same connection each time a line arrives on stdin. Shows whether an open connection
// survives a change of the load balancer.
import http from 'node:http';
import readline from 'node:readline';

const [host, localPortStr] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function ask(): void {
  const req = http.request({ host, port: 80, path: '/', agent, localPort: Number(localPortStr), timeout: 3000 }, (res) => {
    let body = '';
    // Read now: the agent takes the socket back once the response has ended.
    const localPort = res.socket?.localPort;
    res.on('data', (d) => (body += d));
    res.on('end', () => process.stdout.write(JSON.stringify({ server: body.trim(), localPort }) + '\n'));
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (e) => process.stdout.write(JSON.stringify({ error: e.message }) + '\n'));
  req.end();
}

ask();
readline.createInterface({ input: process.stdin }).on('line', ask).on('close', () => {
  agent.destroy();
  process.exit(0);
});
