// An agent using undici's ProxyAgent (HTTP_PROXY / HTTPS_PROXY mode).
// Node's fetch ignores HTTP(S)_PROXY, so the agent names the proxy explicitly; for https
// upstreams Node trusts the Airlock CA through NODE_EXTRA_CA_CERTS (which adds to its roots).
// Setup: (cd examples/node && npm install)   Run: node examples/node/undici_proxy.mjs
import { ProxyAgent, fetch } from "undici";

const proxy = process.env.HTTP_PROXY ?? process.env.AIRLOCK_PROXY ?? "http://127.0.0.1:7879";
const url = process.env.AIRLOCK_DEMO_URL ?? "http://demo.airlock.local/echo";
const response = await fetch(url, {
  dispatcher: new ProxyAgent(proxy),
  headers: { Authorization: "Bearer {{secret:demo/api-key}}" },
});
console.log(response.status);
console.log(JSON.stringify(await response.json(), null, 2));
