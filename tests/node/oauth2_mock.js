// oauth2-mock-server (npm) as a real OAuth provider for tests/connect.rs: listens on a free
// loopback port, prints `port=N` once ready, and exits when stdin closes (its test is done).
const { OAuth2Server } = require('oauth2-mock-server');

(async () => {
  const server = new OAuth2Server();
  await server.issuer.keys.generate('RS256');
  // Count the grants it serves, so the test can see refreshes: GET /grants.
  const grants = {};
  server.service.on('beforeResponse', (resp, req) => {
    const g = req.body.grant_type;
    grants[g] = (grants[g] || 0) + 1;
  });
  server.service.requestHandler.get('/grants', (_req, res) => res.json(grants));
  await server.start(0, '127.0.0.1');
  const port = server.address().port;
  process.stdout.write(`port=${port}\n`);
  process.stdin.resume();
  process.stdin.on('end', () => server.stop().then(() => process.exit(0)));
})().catch((e) => {
  process.stderr.write(String(e) + '\n');
  process.exit(1);
});
