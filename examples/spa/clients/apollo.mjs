import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";

// Apollo Client: HttpLink POSTs JSON by default (keep useGETForQueries off, or add an X-CSRF header).
const client = new ApolloClient({
  link: new HttpLink({ uri: `${BFF}/graphql`, credentials: "include" }),
  cache: new InMemoryCache(),
});

export async function viewer() {
  const { data, error } = await client.query({ query: gql`{ viewer { id name email } }`, errorPolicy: "all" });
  // error: CombinedGraphQLErrors (its .errors carry extensions.code) or a network error
  return { data, errors: error ? (error.errors ?? [error.message]) : undefined };
}
