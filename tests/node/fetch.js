// A Node workflow behind credproxy: undici's fetch through a ProxyAgent (CONNECT), trusting
// the CA given in NODE_EXTRA_CA_CERTS. Usage: node fetch.js URL PROXY_URL
'use strict';
const { fetch, ProxyAgent } = require('undici');

const [url, proxy] = process.argv.slice(2);
(async () => {
  const dispatcher = new ProxyAgent(proxy);
  for (let i = 0; i < 2; i++) {
    const r = await fetch(url, { dispatcher, headers: { authorization: 'Bearer mine' } });
    const body = await r.text();
    if (r.status !== 200) throw new Error(`status ${r.status}: ${body}`);
  }
  await dispatcher.close();
  console.log('ok');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
