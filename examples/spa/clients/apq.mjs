import { Client, fetchExchange, gql } from "@urql/core";
import { persistedExchange } from "@urql/exchange-persisted";

// Automatic Persisted Queries (no manifest on the BFF): the hash first, the query only after a
// PersistedQueryNotFound. Both requests are POSTs (preferGetForPersistedQueries: false).
const client = new Client({
  url: `${BFF}/graphql`,
  preferGetMethod: false,
  fetchOptions: { credentials: "include" },
  exchanges: [persistedExchange({ preferGetForPersistedQueries: false }), fetchExchange],
});

export async function viewer() {
  const { data, error } = await client.query(gql`{ viewer { id name email } }`, {}).toPromise();
  return { data, errors: error?.graphQLErrors };
}
