// A real, independent OpenID Connect provider (panva/oidc-provider) for bff's end-to-end tests.
// Configured from the environment by the pytest fixture; prints "READY <issuer>" when listening.
// Test-only admin routes under /__test/ expose counters and revoke grants.
import { Provider } from 'oidc-provider';

const env = process.env;
const port = Number(env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const accessTtl = Number(env.ACCESS_TTL || 60);
const authMethod = env.CLIENT_AUTH_METHOD || 'client_secret_basic';

const people = {
  alice: { name: 'Alice Example', email: 'alice@example.com' },
  bob: { name: 'Bob Example', email: 'bob@example.com' },
};

const clients = [
  {
    client_id: env.CLIENT_ID || 'bff',
    client_secret: env.CLIENT_SECRET || 'bff-secret',
    redirect_uris: (env.REDIRECT_URIS || '').split(',').filter(Boolean),
    post_logout_redirect_uris: (env.POST_LOGOUT_REDIRECT_URIS || '').split(',').filter(Boolean),
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    token_endpoint_auth_method: authMethod,
    ...(env.BACKCHANNEL_LOGOUT_URI ? {
      backchannel_logout_uri: env.BACKCHANNEL_LOGOUT_URI,
      backchannel_logout_session_required: true,
    } : {}),
  },
  {
    // the demo upstreams introspect opaque access tokens with these credentials
    client_id: 'resource-server',
    client_secret: 'resource-secret',
    redirect_uris: [],
    grant_types: [],
    response_types: [],
  },
];

const stats = {
  refreshGrants: 0, refreshErrors: 0, refreshReuse: 0, codeGrants: 0, revocations: 0, backchannel: 0,
};
const grantsByAccount = new Map();

const provider = new Provider(issuer, {
  clients,
  cookies: { keys: ['e2e-cookie-key-not-secret'] },
  pkce: { required: () => true },
  // The provider refuses to call special-use addresses (SSRF guard); our BFF lives on loopback.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  rotateRefreshToken: () => true,
  ttl: {
    AccessToken: accessTtl,
    IdToken: 3600,
    RefreshToken: 24 * 3600,
    Grant: 24 * 3600,
    Session: 24 * 3600,
    Interaction: 600,
    AuthorizationCode: 60,
  },
  claims: { openid: ['sub', 'sid'], profile: ['name'], email: ['email'] },
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    clientCredentials: { enabled: true },
  },
  async findAccount(ctx, id) {
    const person = people[id] || { name: id, email: `${id}@example.com` };
    return { accountId: id, async claims() { return { sub: id, ...person }; } };
  },
});

provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params.grant_type;
  if (type === 'refresh_token') stats.refreshGrants += 1;
  if (type === 'authorization_code') stats.codeGrants += 1;
});
provider.on('grant.error', (ctx, err) => {
  if (ctx.oidc?.params?.grant_type === 'refresh_token') {
    stats.refreshErrors += 1;
    // reuse detection: a rotated refresh token was replayed, and the whole grant is revoked
    if (String(err?.error_description || '').includes('already used')) stats.refreshReuse += 1;
  }
});
provider.on('grant.revoked', () => { stats.revocations += 1; });
provider.on('backchannel.success', () => { stats.backchannel += 1; });
provider.on('backchannel.error', (ctx, err) => { stats.backchannelErrors = (stats.backchannelErrors || 0) + 1; console.error('backchannel error', err); });
provider.on('refresh_token.saved', (token) => {
  if (!grantsByAccount.has(token.accountId)) grantsByAccount.set(token.accountId, new Set());
  grantsByAccount.get(token.accountId).add(token.grantId);
});

provider.use(async (ctx, next) => {
  if (ctx.path === '/__test/stats') {
    ctx.body = stats;
    return;
  }
  if (ctx.path === '/__test/revoke' && ctx.method === 'POST') {
    const account = ctx.query.sub;
    let revoked = 0;
    for (const grantId of grantsByAccount.get(account) || []) {
      await provider.Grant.adapter.destroy(grantId);
      await provider.RefreshToken.adapter.revokeByGrantId(grantId);
      await provider.AccessToken.adapter.revokeByGrantId(grantId);
      revoked += 1;
    }
    grantsByAccount.delete(account);
    ctx.body = { revoked };
    return;
  }
  await next();
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
