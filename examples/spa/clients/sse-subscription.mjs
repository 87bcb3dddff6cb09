import { createClient } from "graphql-sse";

// graphql-sse in its default "distinct connections" mode: each subscription is one
// POST /graphql with Accept: text/event-stream and Content-Type: application/json, which passes the
// BFF's CSRF rule as it is (no X-CSRF needed). credentials: "include" sends the session cookie to a
// BFF on another origin of the same site ("same-origin", the default, is enough on the BFF's origin).
export async function subscription(orderId, clientOptions = {}) {
  const client = createClient({ url: `${BFF}/graphql`, credentials: "include", ...clientOptions });
  const events = [];
  try {
    for await (const result of client.iterate({
      query: "subscription ($id: ID!) { orderStatusChanged(orderId: $id) { orderId status } }",
      variables: { id: orderId },
    })) {
      events.push(result); // { data: { orderStatusChanged: … } } or { errors: [{ extensions: { code } }] }
      if (events.length === 2 || result.errors) break; // leaving the loop aborts the request
    }
  } finally {
    client.dispose();
  }
  return events;
}
