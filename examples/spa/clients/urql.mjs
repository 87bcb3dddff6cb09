import { Client, fetchExchange, gql } from "@urql/core";

// urql: preferGetMethod false (its default "within-url-limit" sends GETs, refused with 403 without
// an X-CSRF header); alternatively keep GETs and add fetchOptions.headers["X-CSRF"] = "1".
const client = new Client({
  url: `${BFF}/graphql`,
  preferGetMethod: false,
  fetchOptions: { credentials: "include" },
  exchanges: [fetchExchange],
});

export async function viewer() {
  const { data, error } = await client.query(gql`{ viewer { id name email } }`, {}).toPromise();
  return { data, errors: error?.graphQLErrors };
}
