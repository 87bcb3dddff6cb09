import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";

// Apollo Client 4: HttpLink sends a subscription as a JSON POST asking for Apollo's multipart HTTP
// subscriptions (Accept: multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json),
// which the BFF serves on /graphql: no WebSocket and no extra link needed, the cookie does it.
const client = new ApolloClient({
  link: new HttpLink({ uri: `${BFF}/graphql`, credentials: "include" }),
  cache: new InMemoryCache(),
});

export function subscription(orderId) {
  return new Promise((resolve, reject) => {
    const events = [];
    const sub = client
      .subscribe({
        query: gql`
          subscription ($id: ID!) {
            orderStatusChanged(orderId: $id) {
              orderId
              status
            }
          }
        `,
        variables: { id: orderId },
      })
      .subscribe({
        next({ data, error }) {
          // error: CombinedGraphQLErrors (its .errors carry extensions.code) or a network error
          events.push(error ? { errors: error.errors ?? [{ message: error.message }] } : { data });
          if (events.length === 2 || error) {
            sub.unsubscribe(); // aborts the request
            resolve(events);
          }
        },
        error: reject,
        complete: () => resolve(events),
      });
  });
}
