/**
 * Where the BFF is, and its /auth endpoints. The browser never sees a token: only the HttpOnly
 * session cookie, sent by the browser itself.
 *
 * - Same origin (Vite's dev-server proxy, or the SPA served by the same host as the BFF): leave
 *   VITE_BFF_ORIGIN unset; every URL is relative.
 * - Own origin (e.g. the SPA on http://127.0.0.1:5173, the BFF on http://127.0.0.1:8000): set
 *   VITE_BFF_ORIGIN to the BFF's origin. Use the same host name for both (127.0.0.1 and localhost
 *   are different sites: the SameSite=Strict cookie would not be sent). The BFF needs
 *   BFF_CORS_ORIGINS and BFF_LOGIN_RETURN_ORIGINS set to the SPA's origin.
 */
export const BFF_ORIGIN: string = (import.meta.env.VITE_BFF_ORIGIN ?? "").replace(/\/$/, "");
export const OWN_ORIGIN = BFF_ORIGIN !== "" && BFF_ORIGIN !== window.location.origin;
export const GRAPHQL_URL = `${BFF_ORIGIN}/graphql`;

export interface SessionInfo {
  authenticated: boolean;
  user: { sub: string; name: string; email: string } | null;
  expiresAt: string | null;
}

/** `credentials: "include"` sends the cookie to the BFF's own origin too (same site only). */
export async function getSession(): Promise<SessionInfo> {
  const response = await fetch(`${BFF_ORIGIN}/auth/session`, { credentials: "include" });
  if (!response.ok) throw new Error(`/auth/session answered ${response.status}`);
  return (await response.json()) as SessionInfo;
}

/** A full-page navigation: the BFF sends the browser to the identity provider and back. */
export function signIn(): void {
  // Same origin: a relative path. Own origin: an absolute URL, allowed by BFF_LOGIN_RETURN_ORIGINS.
  const here = window.location.pathname + window.location.search;
  const returnTo = OWN_ORIGIN ? window.location.origin + here : here;
  window.location.assign(`${BFF_ORIGIN}/auth/login?return_to=${encodeURIComponent(returnTo)}`);
}

export interface LogoutResult {
  loggedOut: boolean;
  endSessionUrl: string | null;
}

/** POST with the X-CSRF header: /auth/logout is CSRF-protected like /graphql. */
export async function signOut(): Promise<LogoutResult> {
  const response = await fetch(`${BFF_ORIGIN}/auth/logout`, {
    method: "POST",
    credentials: "include",
    headers: { "X-CSRF": "1" },
  });
  if (!response.ok) throw new Error(`/auth/logout answered ${response.status}`);
  return (await response.json()) as LogoutResult;
}
