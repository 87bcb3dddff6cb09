import type { IncomingMessage } from "node:http";

import { defineConfig, loadEnv, type ProxyOptions } from "vite";

/**
 * Two dev set-ups (see README.md):
 *
 * 1. Proxy (default): the dev server forwards /graphql and /auth (and the demo IdP's /idp) to the
 *    BFF at BFF_URL (default http://127.0.0.1:8000). The browser only sees this origin, so the
 *    SameSite=Strict session cookie just works and no BFF setting is needed.
 * 2. Own origin: VITE_BFF_ORIGIN=http://127.0.0.1:8000; no proxy. The BFF needs
 *    BFF_CORS_ORIGINS and BFF_LOGIN_RETURN_ORIGINS set to this dev server's origin.
 */
export default defineConfig(({ mode }) => {
  const env = loadEnv(mode, process.cwd(), "");
  const target = (env.BFF_URL || "http://127.0.0.1:8000").replace(/\/$/, "");
  // The origin the BFF calls its own (its BFF_PUBLIC_URL). It differs from BFF_URL when the BFF
  // runs with BFF_PUBLIC_URL set to this dev server's URL (its IdP then calls back through here).
  const publicOrigin = new URL(env.BFF_PUBLIC_URL || target).origin;

  const toBff: ProxyOptions = {
    target,
    changeOrigin: false, // keep Host: pages the demo IdP builds from it stay on this origin
    autoRewrite: true, // redirects to the BFF's host:port come back to this origin
    configure(proxy) {
      proxy.on("proxyReq", (proxyReq, req: IncomingMessage) => {
        // The BFF refuses a foreign Origin. Pages served by this dev server are the app itself:
        // present them with the BFF's own origin. Any other Origin goes through unchanged.
        if (req.headers.origin && req.headers.origin === `http://${req.headers.host}`) {
          proxyReq.setHeader("origin", publicOrigin);
        }
      });
    },
  };

  return {
    server: {
      host: "127.0.0.1",
      proxy: env.VITE_BFF_ORIGIN ? undefined : { "/graphql": toBff, "/auth": toBff, "/idp": toBff },
    },
  };
});
