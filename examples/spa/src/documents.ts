import { graphql } from "./gql";

/** The signed-in user and their orders (needs a session: UNAUTHENTICATED otherwise). */
export const ViewerQuery = graphql(`
  query Viewer {
    viewer {
      id
      name
      email
      orders(first: 5) {
        id
        placedAt
        totalCents
      }
    }
  }
`);
