// A real server's web service for the demo and the tests: answers every request with the server's name, on
// port 80 of every address (so also on the VIP that the real server holds on lo).
import http from 'node:http';

const name = process.argv[2] ?? 'real-server';
const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.setHeader('x-real-server', name);
  res.end(`${name}\n`);
});
// Long enough for a test or the demo to hold a connection open across a change of the load balancer.
server.keepAliveTimeout = 120_000;
server.listen(80, '::', () => process.stdout.write(`${name} listening on port 80\n`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
