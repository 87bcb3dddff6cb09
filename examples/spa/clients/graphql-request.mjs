import { GraphQLClient, gql } from "graphql-request";

// graphql-request: POST with JSON by default.
const client = new GraphQLClient(`${BFF}/graphql`, { credentials: "include" });

export async function viewer() {
  try {
    return { data: await client.request(gql`{ viewer { id name email } }`) };
  } catch (error) {
    // a ClientError when the answer has errors, e.g. extensions.code "UNAUTHENTICATED"
    return { data: error.response?.data, errors: error.response?.errors ?? [String(error)] };
  }
}
