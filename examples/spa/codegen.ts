import type { CodegenConfig } from "@graphql-codegen/cli";

// Types and a persisted-documents manifest from the BFF's exported schema (`bff export-schema`).
// Run with `npm run codegen`; the output in src/gql/ is committed and a test checks it is current
// (it writes to CODEGEN_OUT instead and compares).
const out = process.env.CODEGEN_OUT ?? "src/gql/";

const config: CodegenConfig = {
  schema: "../../schema/schema.graphql",
  documents: ["src/**/*.ts", "!src/gql/**/*"],
  ignoreNoDocuments: false,
  generates: {
    [out]: {
      preset: "client",
      config: {
        scalars: { DateTime: "string" }, // ISO-8601 on the wire
        enumsAsTypes: true,
        useTypeImports: true,
      },
      presetConfig: {
        fragmentMasking: false,
        // The BFF loads src/gql/persisted-documents.json with BFF_TRUSTED_DOCUMENTS=<path>
        persistedDocuments: { mode: "embedHashInDocument", hashAlgorithm: "sha256" },
      },
    },
  },
};

export default config;
