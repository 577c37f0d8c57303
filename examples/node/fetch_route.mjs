// An agent using Node's built-in fetch in route mode: no proxy or CA configuration.
// Against `airlock dev`:  AIRLOCK_PROXY=http://127.0.0.1:7879 node examples/node/fetch_route.mjs
const proxy = process.env.AIRLOCK_PROXY ?? "http://127.0.0.1:7879";
const response = await fetch(`${proxy}/r/demo/echo`, {
  headers: { Authorization: "Bearer {{secret:demo/api-key}}" },
});
console.log(response.status);
console.log(JSON.stringify(await response.json(), null, 2));
