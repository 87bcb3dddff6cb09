import { Client, fetchExchange } from "@urql/core";
import { persistedExchange } from "@urql/exchange-persisted";

import { GRAPHQL_URL } from "./bff";

/**
 * urql against the BFF.
 *
 * - `preferGetMethod: false` (and `preferGetForPersistedQueries: false`): urql's default
 *   "within-url-limit" sends queries as GET, which the BFF's CSRF rule refuses (403) when the
 *   session cookie comes along without an X-CSRF header. POST with JSON passes the rule.
 * - `credentials: "include"`: the session cookie also goes to a BFF on another origin of the same
 *   site (with BFF_CORS_ORIGINS); same-origin it changes nothing.
 * - persistedExchange sends the hash that graphql-codegen's client preset embedded in each
 *   document (`__meta__.hash`), no query text: with BFF_TRUSTED_DOCUMENTS pointing at
 *   src/gql/persisted-documents.json only those documents run. Without a manifest the BFF answers
 *   PersistedQueryNotFound and urql sends the query once (APQ).
 */
export const client = new Client({
  url: GRAPHQL_URL,
  preferGetMethod: false,
  fetchOptions: { credentials: "include" },
  exchanges: [
    persistedExchange({
      preferGetForPersistedQueries: false,
      generateHash: async (_query, document) => {
        const hash = (document as { __meta__?: { hash?: string } }).__meta__?.hash;
        if (!hash) throw new Error("document without an embedded hash: run `npm run codegen`");
        return hash.replace(/^sha256:/, "");
      },
    }),
    fetchExchange,
  ],
});
