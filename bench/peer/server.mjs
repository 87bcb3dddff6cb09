// The benchmark's peer: the BFF's demo schema and resolvers (with DataLoader) on graphql-yoga,
// over the same upstreams. It has no server-side session: it forwards the caller's bearer token
// (or a service token for anonymous search), as a typical Node BFF without session handling does.
//
// PEER_CLIENT chooses how it calls its upstreams; the schema, resolvers and DataLoaders are the
// same code for every choice:
//   undici (default, "tuned"): one undici `Pool` per upstream (keep-alive), `pool.request`
//   agent  : node:http `request` with one keep-alive `http.Agent` per upstream
//   fetch  : Node's global `fetch` (undici's WHATWG fetch, its shared global dispatcher)
// PEER_MAX_SOCKETS bounds the connections per upstream for agent and undici (default 256).
// A/B on the 2-core development machine (scripts/bench_cpu.py, CPU ms per viewer request, 3 rounds):
// undici 0-4% under agent; agent with a socket `timeout` (PEER_AGENT_TIMEOUT_MS) 13-22% over undici.
import http from 'node:http';
import { createSchema, createYoga } from 'graphql-yoga';
import DataLoader from 'dataloader';

const { PORT, ACCOUNTS_URL, CATALOG_URL, SERVICE_TOKEN } = process.env;
const CLIENT = process.env.PEER_CLIENT || 'undici';
const MAX_SOCKETS = Number(process.env.PEER_MAX_SOCKETS || 256);
const AGENT_TIMEOUT = Number(process.env.PEER_AGENT_TIMEOUT_MS || 0);

const typeDefs = /* GraphQL */ `
  scalar DateTime
  type Query {
    viewer: User
    searchProducts(query: String!, first: Int = 10): [Product!]!
  }
  type User { id: ID!, name: String!, email: String!, orders(first: Int = 10): [Order!]! }
  type Order { id: ID!, placedAt: DateTime!, items: [OrderItem!]!, totalCents: Int! }
  type OrderItem { quantity: Int!, product: Product }
  type Product { id: ID!, name: String!, priceCents: Int! }
`;

// --- upstream clients: send(origin, path, method, headers, body) -> parsed JSON ---------------

function upstreamError(status) {
  return new Error(`upstream answered ${status}`);
}

function fetchClient() {
  return async (upstream, path, method, headers, body) => {
    const response = await fetch(upstream.origin + path, { method, headers, body });
    if (response.status < 200 || response.status > 299) {
      await response.arrayBuffer();
      throw upstreamError(response.status);
    }
    return response.json();
  };
}

function agentClient() {
  const agents = new Map();
  const agentFor = (upstream) => {
    let agent = agents.get(upstream.origin);
    if (!agent) {
      // keepAlive; PEER_AGENT_TIMEOUT_MS (e.g. 4000) would close idle sockets before uvicorn's 5 s
      // keep-alive timeout, but the socket timer re-armed on every request costs the agent ~20% CPU
      const options = { keepAlive: true, maxSockets: MAX_SOCKETS, maxFreeSockets: MAX_SOCKETS, scheduling: 'lifo' };
      if (AGENT_TIMEOUT > 0) options.timeout = AGENT_TIMEOUT;
      agent = new http.Agent(options);
      agents.set(upstream.origin, agent);
    }
    return agent;
  };
  return (upstream, path, method, headers, body) =>
    new Promise((resolve, reject) => {
      if (body !== undefined) headers['content-length'] = Buffer.byteLength(body);
      const request = http.request(
        { agent: agentFor(upstream), hostname: upstream.hostname, port: upstream.port, path, method, headers },
        (response) => {
          const chunks = [];
          response.on('data', (chunk) => chunks.push(chunk));
          response.on('error', reject);
          response.on('end', () => {
            if (response.statusCode < 200 || response.statusCode > 299) return reject(upstreamError(response.statusCode));
            try {
              resolve(JSON.parse(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)));
            } catch (error) {
              reject(error);
            }
          });
        },
      );
      request.on('error', reject);
      request.end(body);
    });
}

async function undiciClient() {
  const { Pool } = await import('undici');
  const pools = new Map();
  const poolFor = (upstream) => {
    let pool = pools.get(upstream.origin);
    if (!pool) {
      pool = new Pool(upstream.origin, { connections: MAX_SOCKETS, pipelining: 1, keepAliveTimeout: 4000 });
      pools.set(upstream.origin, pool);
    }
    return pool;
  };
  return async (upstream, path, method, headers, body) => {
    const { statusCode, body: payload } = await poolFor(upstream).request({ path, method, headers, body });
    if (statusCode < 200 || statusCode > 299) {
      await payload.dump();
      throw upstreamError(statusCode);
    }
    return payload.json();
  };
}

const CLIENTS = { fetch: fetchClient, agent: agentClient, undici: undiciClient };
if (!CLIENTS[CLIENT]) throw new Error(`PEER_CLIENT must be one of ${Object.keys(CLIENTS).join(', ')}`);
const send = await CLIENTS[CLIENT]();

function upstream(url) {
  const parsed = new URL(url);
  return {
    origin: parsed.origin,
    hostname: parsed.hostname,
    port: parsed.port || 80,
    path: parsed.pathname.replace(/\/$/, '') + parsed.search,
  };
}
const ACCOUNTS = upstream(ACCOUNTS_URL);
const CATALOG = upstream(CATALOG_URL);

// --- the schema's resolvers, the same whatever the client ----------------------------------------

function accounts(token, path) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  return send(ACCOUNTS, ACCOUNTS.path + path, 'GET', headers, undefined);
}

async function catalog(token, query, variables) {
  const headers = { accept: 'application/json', 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const body = await send(CATALOG, CATALOG.path || '/', 'POST', headers, JSON.stringify({ query, variables }));
  if (body.errors) throw new Error('catalog answered errors');
  return body.data;
}

const PRODUCTS = 'query ($ids: [ID!]!) { productsByIds(ids: $ids) { id name priceCents } }';
const SEARCH = 'query ($query: String!, $first: Int) { searchProducts(query: $query, first: $first) { id name priceCents } }';

const resolvers = {
  Query: {
    viewer: (_, __, ctx) => accounts(ctx.token, '/me'),
    searchProducts: async (_, { query, first }, ctx) =>
      (await catalog(ctx.token || SERVICE_TOKEN, SEARCH, { query, first })).searchProducts,
  },
  User: {
    orders: (user, { first }, ctx) => accounts(ctx.token, `/users/${encodeURIComponent(user.id)}/orders?limit=${first}`),
  },
  Order: {
    totalCents: async (order, _, ctx) => {
      const products = await ctx.products.loadMany(order.items.map((item) => item.productId));
      return order.items.reduce((sum, item, i) => sum + (products[i] ? products[i].priceCents * item.quantity : 0), 0);
    },
  },
  OrderItem: {
    product: (item, _, ctx) => ctx.products.load(item.productId),
  },
};

const yoga = createYoga({
  schema: createSchema({ typeDefs, resolvers }),
  graphiql: false,
  logging: false,
  context: ({ request }) => {
    const token = (request.headers.get('authorization') || '').replace(/^Bearer /i, '') || null;
    return {
      token,
      products: new DataLoader(async (ids) => (await catalog(token, PRODUCTS, { ids })).productsByIds),
    };
  },
});

http.createServer(yoga).listen(Number(PORT), '127.0.0.1', () => console.log(`READY ${PORT} ${CLIENT}`));
