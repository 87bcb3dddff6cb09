// A real, independent OpenID Connect provider (panva/oidc-provider) for bff's end-to-end tests.
// Configured from the environment by the pytest fixture; prints "READY <issuer>" when listening.
// Test-only admin routes under /__test/ expose counters and revoke grants.
//
// Opt-in features (each absent: the provider is configured exactly as before):
//   RESOURCES=http://a.test,http://b.test  RFC 8707 resource indicators for these resources (scope 'api')
//   DPOP=1                                 RFC 9449 DPoP, stated explicitly (oidc-provider 9.x has it on by default)
//   DPOP_NONCE=1                           ...and a server-provided DPoP nonce is required (implies DPOP=1)
//   DPOP_REQUIRED=1                        the bff client must send a DPoP proof at the token endpoint
//   TOKEN_EXCHANGE=1                       RFC 8693 token exchange (access token -> access token for an audience)
//   ACR=1                                  step-up: acr urn:bff:loa:1 (a login at the form) or urn:bff:loa:2 (the
//                                          same form, asked for with acr_values: a pretend second factor) in the
//                                          ID token with amr and auth_time; a session whose acr is none of a
//                                          request's acr_values signs in again; access tokens carry the acr
//                                          (introspection shows it)
//   SCOPES=orders:read orders:write        more scopes the provider knows, granted per account in three tiers
//                                          (the dev IdP's): alice every one asked for, bob the read-only ones
//                                          (':read'/'.read' suffix, 'read:' prefix), anyone else none
import { randomBytes } from 'node:crypto';
import { Provider, errors, interactionPolicy } from 'oidc-provider';
// oidc-provider has no public API for DPoP in custom grants: its own helper (9.x layout; the
// version is pinned in package-lock.json). Used only when TOKEN_EXCHANGE=1.
import validateDpop, { checkDpopReplay } from 'oidc-provider/lib/helpers/validate_dpop.js';

const env = process.env;
const port = Number(env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const accessTtl = Number(env.ACCESS_TTL || 60);
const authMethod = env.CLIENT_AUTH_METHOD || 'client_secret_basic';
const clientId = env.CLIENT_ID || 'bff';
const resources = (env.RESOURCES || '').split(',').map((r) => r.trim()).filter(Boolean);
const dpopNonce = env.DPOP_NONCE === '1';
const dpop = env.DPOP === '1' || dpopNonce;
const dpopRequired = env.DPOP_REQUIRED === '1';
const tokenExchange = env.TOKEN_EXCHANGE === '1';
const acr = env.ACR === '1';
const extraScopes = (env.SCOPES || '').split(/[ ,]+/).filter(Boolean);
const OIDC_SCOPES = ['openid', 'offline_access', 'profile', 'email'];
function mayHave(accountId, scope) {
  if (OIDC_SCOPES.includes(scope) || accountId === 'alice') return true;
  return accountId === 'bob' && (scope.endsWith(':read') || scope.endsWith('.read') || scope.startsWith('read:'));
}
// the Authentication Context Class References of ACR=1, and the methods each pretends to use
const ACRS = { 'urn:bff:loa:1': ['pwd'], 'urn:bff:loa:2': ['pwd', 'otp'] };
const ACR_DEFAULT = 'urn:bff:loa:1';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
// every listed resource is one API with one scope, 'api'. oidc-provider puts a resource scope in a
// grant only when the authorization request asks for it (scope=... api) together with resource=<it>
// (devInteractions' consent then grants it: the consent prompt's rs_scopes_missing check); a token
// for a resource carries only the scopes of that resource, so without 'api' it would have none.
// Asked without any resource, 'api' is simply dropped (oidc-provider keeps only its OIDC scopes).
const RESOURCE_SCOPE = 'api';

const people = {
  alice: { name: 'Alice Example', email: 'alice@example.com' },
  bob: { name: 'Bob Example', email: 'bob@example.com' },
};

const clients = [
  {
    client_id: clientId,
    client_secret: env.CLIENT_SECRET || 'bff-secret',
    redirect_uris: (env.REDIRECT_URIS || '').split(',').filter(Boolean),
    post_logout_redirect_uris: (env.POST_LOGOUT_REDIRECT_URIS || '').split(',').filter(Boolean),
    grant_types: [
      'authorization_code', 'refresh_token', 'client_credentials', ...(tokenExchange ? [TOKEN_EXCHANGE] : []),
    ],
    response_types: ['code'],
    token_endpoint_auth_method: authMethod,
    ...(dpopRequired ? { dpop_bound_access_tokens: true } : {}),
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
  // successful refresh_token grants by their `resource` parameter ('' for none: the login token)
  refreshGrantsByResource: {},
  exchangeGrants: 0,
  exchangeErrors: 0,
};
const grantsByAccount = new Map();

function resourceServerInfo(indicator) {
  return {
    scope: RESOURCE_SCOPE, audience: indicator, accessTokenTTL: accessTtl, accessTokenFormat: 'opaque',
  };
}

// only what the environment asks for is configured: an unset option keeps oidc-provider's default
const optionalFeatures = {};
if (resources.length) {
  optionalFeatures.resourceIndicators = {
    enabled: true,
    // No default resource: an authorization request, code exchange or refresh without `resource`
    // stays what it was (the code exchange and a refresh without it answer an access token for the
    // userinfo endpoint, with no `aud`: the BFF's own login token). With 'openid' in the scope and
    // useGrantedResource false that is oidc-provider's rule; answering undefined for `oneOf` also
    // covers a grant without 'openid' (it would otherwise be invalid_target: several resources).
    defaultResource: async () => undefined,
    useGrantedResource: async () => false,
    async getResourceServerInfo(ctx, indicator, client) {
      if (client.clientId === clientId && resources.includes(indicator)) return resourceServerInfo(indicator);
      throw new errors.InvalidTarget();
    },
  };
}
if (dpop) {
  optionalFeatures.dPoP = {
    enabled: true,
    ...(dpopNonce ? { nonceSecret: randomBytes(32), requireNonce: () => true } : {}),
  };
}

const stepUp = {};
if (acr) {
  const { Check } = interactionPolicy;
  const policy = interactionPolicy.base();
  // oidc-provider re-prompts only for essential acr claims; acr_values are voluntary. A real IdP steps
  // up on them: a session whose acr is none of the asked values must sign in again (unless it just did).
  policy.get('login').checks.add(new Check('acr_values', 'a stronger sign-in was asked for', (ctx) => {
    const asked = String(ctx.oidc.params.acr_values || '').split(' ').filter(Boolean);
    if (!asked.length || ctx.oidc.result?.login || asked.includes(ctx.oidc.acr)) return Check.NO_NEED_TO_PROMPT;
    return Check.REQUEST_PROMPT;
  }));
  Object.assign(stepUp, {
    acrValues: Object.keys(ACRS),
    interactions: { policy },
    // the acr of the sign-in behind an access token, for the resource servers (introspection)
    extraTokenClaims(ctx, token) {
      if (token.kind !== 'AccessToken') return undefined;
      const source = ctx?.oidc?.entities?.AuthorizationCode ?? ctx?.oidc?.entities?.RefreshToken;
      return source?.acr ? { acr: source.acr } : undefined;
    },
  });
}

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
  claims: {
    openid: ['sub', 'sid', ...(acr ? ['acr', 'amr', 'auth_time'] : [])], profile: ['name'], email: ['email'],
  },
  ...stepUp,
  ...(extraScopes.length ? { scopes: [...OIDC_SCOPES, ...extraScopes] } : {}),
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    clientCredentials: { enabled: true },
    ...optionalFeatures,
  },
  async findAccount(ctx, id) {
    const person = people[id] || { name: id, email: `${id}@example.com` };
    return { accountId: id, async claims() { return { sub: id, ...person }; } };
  },
});

if (extraScopes.length) {
  // devInteractions' consent grants every scope asked for: an account gets only those it may have
  const addOIDCScope = provider.Grant.prototype.addOIDCScope;
  // (the others are rejected, not left out: a scope left out would be asked for again, forever)
  provider.Grant.prototype.addOIDCScope = function addOwnOIDCScope(scope) {
    if (!(this instanceof provider.Grant)) return addOIDCScope.call(this, scope); // rejectOIDCScope's record
    const asked = String(scope || '').split(' ').filter(Boolean);
    const refused = asked.filter((value) => !mayHave(this.accountId, value));
    if (refused.length) this.rejectOIDCScope(refused.join(' '));
    return addOIDCScope.call(this, asked.filter((value) => mayHave(this.accountId, value)).join(' '));
  };
}

if (acr) {
  // devInteractions' login form says only who signed in: the acr (and amr) of that login come from
  // what the authorization request asked for, the first of its acr_values this provider knows
  const finish = provider.interactionFinished.bind(provider);
  provider.interactionFinished = async (req, res, result, options) => {
    if (result?.login) {
      const { params } = await provider.interactionDetails(req, res);
      const asked = String(params.acr_values || '').split(' ');
      const chosen = asked.find((value) => value in ACRS) || ACR_DEFAULT;
      return finish(req, res, { ...result, login: { ...result.login, acr: chosen, amr: ACRS[chosen] } }, options);
    }
    return finish(req, res, result, options);
  };
}

provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params.grant_type;
  if (type === 'refresh_token') {
    stats.refreshGrants += 1;
    const resource = String(ctx.oidc.params.resource || '');
    stats.refreshGrantsByResource[resource] = (stats.refreshGrantsByResource[resource] || 0) + 1;
  }
  if (type === 'authorization_code') stats.codeGrants += 1;
  if (type === TOKEN_EXCHANGE) stats.exchangeGrants += 1;
});
provider.on('grant.error', (ctx, err) => {
  if (ctx.oidc?.params?.grant_type === 'refresh_token') {
    stats.refreshErrors += 1;
    // reuse detection: a rotated refresh token was replayed, and the whole grant is revoked.
    // oidc-provider 9.x answers the generic "grant request is invalid" and keeps the reason in
    // error_detail (logged, never sent), so both are looked at.
    const reason = `${err?.error_description || ''} ${err?.error_detail || ''}`;
    if (reason.includes('already used')) stats.refreshReuse += 1;
  }
  if (ctx.oidc?.params?.grant_type === TOKEN_EXCHANGE) stats.exchangeErrors += 1;
});
provider.on('grant.revoked', () => { stats.revocations += 1; });
provider.on('backchannel.success', () => { stats.backchannel += 1; });
provider.on('backchannel.error', (ctx, err) => { stats.backchannelErrors = (stats.backchannelErrors || 0) + 1; console.error('backchannel error', err); });
provider.on('refresh_token.saved', (token) => {
  if (!grantsByAccount.has(token.accountId)) grantsByAccount.set(token.accountId, new Set());
  grantsByAccount.get(token.accountId).add(token.grantId);
});

function oneValue(value) {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

// RFC 8693 token exchange, narrowed to what the BFF does: an access token this provider issued to
// the calling client (subject_token, type access_token) for an access token of the same account
// and grant, for one audience: `resource` (RFC 8707, an absolute URI) or `audience` (a name), one of
// RESOURCES when those are set. Errors: invalid_request (missing or unsupported parameters),
// invalid_grant (subject token unknown, expired, another client's, its grant gone, or DPoP-bound
// to another key), invalid_target (no, several or an unknown target), invalid_scope. A DPoP proof on
// the request binds the new token to its key (cnf.jkt), and a DPoP-bound subject token needs one.
async function tokenExchangeHandler(ctx) {
  const { params, client } = ctx.oidc;
  if (!params.subject_token) throw new errors.InvalidRequest("missing required parameter 'subject_token'");
  if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidRequest(`subject_token_type must be ${ACCESS_TOKEN_TYPE}`);
  }
  const dPoP = await validateDpop(provider, ctx);
  const subject = await provider.AccessToken.find(params.subject_token);
  if (!subject?.isValid) throw new errors.InvalidGrant('subject token not found');
  if (subject.clientId !== client.clientId) throw new errors.InvalidGrant('subject token was issued to another client');
  if (subject.jkt && (!dPoP || dPoP.thumbprint !== subject.jkt)) {
    throw new errors.InvalidGrant('subject token is DPoP-bound: a proof with its key is needed');
  }
  const grant = await provider.Grant.find(subject.grantId);
  if (!grant || grant.clientId !== client.clientId || grant.accountId !== subject.accountId) {
    throw new errors.InvalidGrant('subject token grant not found');
  }

  const targets = [...new Set([...oneValue(params.resource), ...oneValue(params.audience)])];
  if (targets.length !== 1) throw new errors.InvalidTarget('exactly one resource or audience must be requested');
  const [target] = targets;
  if (oneValue(params.resource).length && !URL.canParse(target)) {
    throw new errors.InvalidTarget('resource indicator must be an absolute URI');
  }
  if (resources.length && !resources.includes(target)) throw new errors.InvalidTarget();

  const requested = params.scope ? params.scope.split(' ').filter(Boolean) : undefined;
  const allowed = resources.length ? [RESOURCE_SCOPE] : [...subject.scopes];
  const missing = (requested || []).filter((scope) => !allowed.includes(scope));
  if (missing.length) throw new errors.InvalidScope('requested scope is not allowed', missing.join(' '));

  await checkDpopReplay(provider, ctx, dPoP, client.clientId, errors.InvalidGrant);
  const at = new provider.AccessToken({
    accountId: subject.accountId,
    client,
    expiresWithSession: subject.expiresWithSession,
    grantId: subject.grantId,
    gty: TOKEN_EXCHANGE,
    sessionUid: subject.sessionUid,
    sid: subject.sid,
    scope: (requested || allowed).join(' ') || undefined,
  });
  if (resources.length) {
    at.resourceServer = new provider.ResourceServer(target, resourceServerInfo(target));
  } else {
    at.setAudience(target);
  }
  if (dPoP) at.setThumbprint('jkt', dPoP.thumbprint);
  ctx.oidc.entity('AccessToken', at);
  const accessToken = await at.save();
  ctx.body = {
    access_token: accessToken,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: at.tokenType,
    expires_in: at.expiration,
    ...(at.scope ? { scope: at.scope } : {}),
  };
}

if (tokenExchange) {
  provider.registerGrantType(
    TOKEN_EXCHANGE,
    tokenExchangeHandler,
    ['subject_token', 'subject_token_type', 'resource', 'audience', 'scope', 'requested_token_type'],
    ['resource', 'audience'],
  );
}

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
