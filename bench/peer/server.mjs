// The benchmark's peer: the BFF's demo schema and resolvers (with DataLoader) on graphql-yoga,
// over the same upstreams. It has no server-side session: it forwards the caller's bearer token
// (or a service token for anonymous search), as a typical Node BFF without session handling does.
import { createServer } from 'node:http';
import { createSchema, createYoga } from 'graphql-yoga';
import DataLoader from 'dataloader';

const { PORT, ACCOUNTS_URL, CATALOG_URL, SERVICE_TOKEN } = process.env;

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

async function call(url, token, init = {}) {
  const headers = { ...(init.headers || {}), accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(url, { ...init, headers });
  if (!response.ok) throw new Error(`upstream answered ${response.status}`);
  return response.json();
}

async function catalog(token, query, variables) {
  const body = await call(CATALOG_URL, token, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
  if (body.errors) throw new Error('catalog answered errors');
  return body.data;
}

const PRODUCTS = 'query ($ids: [ID!]!) { productsByIds(ids: $ids) { id name priceCents } }';
const SEARCH = 'query ($query: String!, $first: Int) { searchProducts(query: $query, first: $first) { id name priceCents } }';

const resolvers = {
  Query: {
    viewer: (_, __, ctx) => call(`${ACCOUNTS_URL}/me`, ctx.token),
    searchProducts: async (_, { query, first }, ctx) =>
      (await catalog(ctx.token || SERVICE_TOKEN, SEARCH, { query, first })).searchProducts,
  },
  User: {
    orders: (user, { first }, ctx) =>
      call(`${ACCOUNTS_URL}/users/${encodeURIComponent(user.id)}/orders?limit=${first}`, ctx.token),
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

createServer(yoga).listen(Number(PORT), '127.0.0.1', () => console.log(`READY ${PORT}`));
