// Runs graphql-http's GraphQL-over-HTTP server audits (MUST, SHOULD and MAY) against a URL and
// prints one JSON array of {id, name, status, reason}.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
const results = await auditServer({ url });
console.log(JSON.stringify(results.map(({ id, name, status, reason }) => ({ id, name, status, reason }))));
