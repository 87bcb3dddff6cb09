"""Transport: GraphQL over HTTP, Server-Sent Events, multipart and graphql-transport-ws, built on
`documents` and `execution`."""
