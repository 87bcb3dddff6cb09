// Runs one client snippet (fetch.mjs, urql.mjs, apollo.mjs, graphql-request.mjs) in Node against a
// BFF, as tests/e2e/test_spa.py does: `BFF_URL=http://127.0.0.1:8000 BFF_COOKIE='bff_session=…'
// node clients/run.mjs apollo`. The snippets are browser code: here the global fetch adds the
// session cookie the browser would send, then the snippet's `viewer()` result is printed as JSON.
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
globalThis.fetch = (input, init = {}) => {
  const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
  if (cookie) headers.set("cookie", cookie);
  return browserFetch(input, { ...init, headers });
};
globalThis.BFF = (process.env.BFF_URL ?? "http://127.0.0.1:8000").replace(/\/$/, "");

const snippet = await import(`./${name}.mjs`);
console.log(JSON.stringify(await snippet.viewer()));
process.exit(0);
