// GraphQL Mesh beside bff's OpenAPI sources: one OpenAPI document turned into a GraphQL schema by
// @omnigraph/openapi (`loadGraphQLSchemaFromOpenAPI`, the loader behind Mesh's `openapi` source and
// Mesh Compose's `loadOpenAPISubgraph`), served by graphql-yoga (the server Mesh and Hive Gateway
// are built on), calling the same upstream service as `bff serve`.
//
//   MESH_SOURCE    the OpenAPI document: a path or an http(s) URL (required)
//   MESH_ENDPOINT  the upstream's base URL, the document's server path included (default: the
//                  document's first server)
//   MESH_NAME      the source's name (default: "source")
//   PORT           where to serve /graphql (default 4000)
//   MESH_FETCH     how the upstream is called:
//                    whatwg (default, the tuned one): Mesh's own fetch as it comes (@whatwg-node/fetch
//                      over node:http, Node 20's global agent, which keeps connections alive)
//                    agent: the same fetch with a keep-alive `http.Agent` of our own (lifo, 256
//                      sockets), as Hive Gateway's `useCustomAgent` plugin sets one
//                    native: Node's global fetch (undici)
//                  A/B with `python scripts/bench_sources.py --mesh whatwg=whatwg --mesh agent=agent
//                  --mesh native=native` (pets, 5 rounds): agent 11-12% and native 34-76% more CPU per
//                  request than whatwg.
//
//   node server.mjs --print [DOCUMENT...]   for each document (default MESH_SOURCE), a JSON line:
//                                          its schema (SDL), the loader's error, what it logged
//
// Run it with NODE_ENV=production (no GraphiQL, no landing page, errors masked).
import http from 'node:http';
import https from 'node:https';
import { createYoga } from 'graphql-yoga';
import { printSchema } from 'graphql';
import { fetch as meshFetch } from '@whatwg-node/fetch';
import { loadGraphQLSchemaFromOpenAPI } from '@omnigraph/openapi';

const SOURCE = process.env.MESH_SOURCE;
const ENDPOINT = process.env.MESH_ENDPOINT || undefined;
const NAME = process.env.MESH_NAME || 'source';
const PORT = Number(process.env.PORT || 4000);
const FETCH = process.env.MESH_FETCH || 'whatwg';
const PRINT = process.argv.includes('--print');

if (!SOURCE && !PRINT) {
  console.error('MESH_SOURCE is required');
  process.exit(2);
}

// Mesh's loaders take a Logger: everything they warn or fail about is kept (for --print)
const said = [];
function logger(prefix = NAME) {
  const keep = (level) => (...args) => {
    const text = args.map((a) => (a instanceof Error ? a.message : typeof a === 'string' ? a : JSON.stringify(a))).join(' ');
    said.push({ level, text: `${prefix}: ${text}` });
    if (level === 'error' || (level === 'warn' && !PRINT)) console.error(`[mesh ${level}] ${prefix}: ${text}`);
  };
  return {
    name: prefix,
    log: keep('info'),
    info: () => {},
    debug: () => {},
    warn: keep('warn'),
    error: keep('error'),
    child: (name) => logger(`${prefix} ${typeof name === 'string' ? name : JSON.stringify(name)}`),
  };
}

function tunedFetch() {
  const options = { keepAlive: true, maxSockets: 256, maxFreeSockets: 256, scheduling: 'lifo' };
  const agents = { 'http:': new http.Agent(options), 'https:': new https.Agent(options) };
  return (input, init) => {
    const url = typeof input === 'string' ? input : input.url;
    const agent = agents[url.slice(0, url.indexOf(':') + 1)];
    return meshFetch(input, { ...init, agent });
  };
}

const fetchFn = FETCH === 'native' ? globalThis.fetch : FETCH === 'whatwg' ? meshFetch : tunedFetch();

async function load(source) {
  return loadGraphQLSchemaFromOpenAPI(NAME, {
    source,
    endpoint: ENDPOINT,
    cwd: process.cwd(),
    fetch: fetchFn,
    logger: logger(),
  });
}

if (PRINT) {
  // one JSON line per document: MESH_SOURCE, or every path given after --print
  const paths = process.argv.slice(process.argv.indexOf('--print') + 1);
  for (const source of paths.length ? paths : [SOURCE]) {
    said.length = 0;
    let sdl = null;
    let error = null;
    try {
      sdl = printSchema(await load(source));
    } catch (failure) {
      error = String(failure?.message || failure);
    }
    process.stdout.write(JSON.stringify({ source, sdl, error, said }) + '\n');
  }
  process.exit(0);
}

const schema = await load(SOURCE);
const yoga = createYoga({
  schema,
  graphiql: false,
  landingPage: false,
  logging: 'warn',
});
http.createServer(yoga).listen(PORT, '127.0.0.1', () => {
  console.error(`mesh (${FETCH}) on http://127.0.0.1:${PORT}/graphql, ${SOURCE} -> ${ENDPOINT || 'servers[0]'}`);
});
