import { createClient } from "graphql-ws";

// graphql-ws (graphql-transport-ws) on ws(s)://<bff>/graphql. A page on the BFF's origin (or on one in
// BFF_CORS_ORIGINS) needs nothing else: the browser sends the session cookie and its Origin with
// the upgrade. (In Node, clients/run.mjs provides a global WebSocket that does the same.)
export async function subscription(orderId, clientOptions = {}) {
  const client = createClient({ url: `${BFF.replace(/^http/, "ws")}/graphql`, ...clientOptions });
  const events = [];
  try {
    for await (const result of client.iterate({
      query: "subscription ($id: ID!) { orderStatusChanged(orderId: $id) { orderId status } }",
      variables: { id: orderId },
    })) {
      events.push(result); // { data: { orderStatusChanged: … } } or { errors: [{ extensions: { code } }] }
      if (events.length === 2 || result.errors) break; // leaving the loop sends complete
    }
  } finally {
    await client.dispose();
  }
  return events;
}
