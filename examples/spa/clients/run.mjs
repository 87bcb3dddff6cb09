// Runs one client snippet (fetch.mjs, urql.mjs, apollo.mjs, graphql-request.mjs) in Node against a
// BFF, as tests/e2e/test_spa.py does: `BFF_URL=http://127.0.0.1:8000 BFF_COOKIE='bff_session=…'
// node clients/run.mjs apollo`. The snippets are browser code: here the global fetch adds the
// session cookie the browser would send, then the snippet's `viewer()` result is printed as JSON.
//
// A subscription snippet (sse-subscription.mjs, ws-subscription.mjs, apollo-subscription.mjs, as
// tests/e2e/test_subscription_clients.py runs them) exports `subscription(orderId, clientOptions)`
// instead: `BFF_ORDER_ID=o-alice-1 node clients/run.mjs ws-subscription` prints
// {"events": [...]} (or {"events": [...], "error": ...}; "http": each fetch's method, Accept,
// Content-Type, status and answer's Content-Type; "refused": the errors of WebSocket handshakes).
// Node 20 has no global WebSocket: here it is `ws`, sending the cookie and
// the Origin a browser would send with the upgrade (the BFF's origin, or BFF_ORIGIN).
// BFF_RETRY_ATTEMPTS sets the clients' retryAttempts (graphql-sse, graphql-ws: 5 by default).
import WebSocket from "ws";

const [name] = process.argv.slice(2);
// urql tears its operation down (aborting the fetch) once the result is in; in a browser that is
// silent, in Node a late AbortError is an unhandled rejection that would fail the process.
process.on("unhandledRejection", (reason) => {
  if (reason && reason.name === "AbortError") return;
  console.error(reason);
  process.exit(1);
});
const cookie = process.env.BFF_COOKIE ?? "";
const browserFetch = globalThis.fetch;
const exchanges = []; // what each request asked for and got (printed for subscription snippets)
globalThis.fetch = async (input, init = {}) => {
  const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
  if (cookie) headers.set("cookie", cookie);
  const response = await browserFetch(input, { ...init, headers });
  exchanges.push({
    method: init.method ?? "GET",
    accept: headers.get("accept"),
    contentType: headers.get("content-type"),
    status: response.status,
    answer: response.headers.get("content-type"),
  });
  return response;
};
globalThis.BFF = (process.env.BFF_URL ?? "http://127.0.0.1:8000").replace(/\/$/, "");

const origin = process.env.BFF_ORIGIN ?? new URL(globalThis.BFF).origin;
const refused = [];
globalThis.WebSocket = class BrowserWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols, { origin, headers: cookie ? { cookie } : {} });
    // a browser only reports a refused handshake as close 1006; ws says which answer it got
    this.on("error", (error) => refused.push(error.message));
  }
};

const snippet = await import(`./${name}.mjs`);
if (snippet.subscription) {
  const options = {};
  if (process.env.BFF_RETRY_ATTEMPTS) options.retryAttempts = Number(process.env.BFF_RETRY_ATTEMPTS);
  const output = { events: [] };
  try {
    output.events = await snippet.subscription(process.env.BFF_ORDER_ID ?? "o-alice-1", options);
  } catch (error) {
    output.error = describe(error);
  }
  if (refused.length) output.refused = refused;
  if (exchanges.length) output.http = exchanges;
  console.log(JSON.stringify(output));
} else {
  console.log(JSON.stringify(await snippet.viewer()));
}
process.exit(0);

function describe(error) {
  // graphql-ws rejects with the socket's error or close event, or with the GraphQL errors of an
  // `error` message; graphql-sse and Apollo with an Error (graphql-sse's NetworkError: a Response)
  if (Array.isArray(error)) return { errors: error };
  if (error && typeof error.code === "number" && "reason" in error) return { close: error.code, reason: error.reason };
  if (error && error.response && typeof error.response.status === "number") {
    return { message: String(error.message), status: error.response.status };
  }
  return { message: String(error?.message ?? error), errors: error?.errors };
}
