// Serves the web client (no CDN, no external assets) and the little it needs to start: the
// homeserver users' browsers reach (never the internal one), how meeting aliases are spelled here,
// and whose call APIs the client may send a user's identity to without asking (see
// client/src/matrix/callTrust.ts). Every page answer carries the headers that keep it from being
// framed, leaking its URL, or being downgraded to http.
import { existsSync } from "node:fs";
import path from "node:path";
import express, { type RequestHandler, type Router } from "express";
import type { ParleyConfig } from "../config/schema.ts";
import { getLogger } from "../log.ts";

export const CLIENT_DIR = path.resolve(import.meta.dirname, "../../../client/dist");

/** What GET /_parley/v1/client-config answers. */
export interface ClientSettings {
  /** homeserver.publicUrl; absent: the client finds the homeserver from serverName's .well-known. */
  homeserverUrl?: string;
  serverName: string;
  aliasPrefix: string;
  /** Call APIs announced by these bots (localparts) of these servers (globs) get tokens unasked. */
  callTrust: { servers: string[]; botLocalparts: string[]; insecureLoopback: boolean };
}

export type ClientConfig = Pick<ParleyConfig, "homeserver" | "appservice" | "meetings" | "federation" | "client">;

export function clientSettings(config: ClientConfig): ClientSettings {
  const bots = [config.appservice.botLocalpart, ...config.client.callBotLocalparts];
  return {
    ...(config.homeserver.publicUrl ? { homeserverUrl: config.homeserver.publicUrl } : {}),
    serverName: config.homeserver.domain,
    aliasPrefix: config.meetings.aliasPrefix,
    callTrust: {
      servers: [config.homeserver.domain, ...config.federation.allow],
      botLocalparts: [...new Set(bots)],
      insecureLoopback: config.client.insecureLoopbackCallApis,
    },
  };
}

// connect-src *: the user's own homeserver and other institutions' call APIs.
// blob: avatars fetched with the access token; wasm: matrix-js-sdk's Rust crypto.
const BASE_CSP =
  "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src * ws: wss:; img-src 'self' data: blob:; " +
  "media-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'";

/** The page headers: the app may not be framed at all, the widget only by the configured hosts. */
export function pageHeaders(config: ClientConfig): { page: Record<string, string>; widget: Record<string, string>; common: Record<string, string> } {
  const hosts = config.client.widgetHostOrigins;
  // Served over https when users reach it over https (a TLS proxy in front): the public URL says.
  const https = new URL(config.meetings.publicUrl).protocol === "https:";
  return {
    common: {
      "Referrer-Policy": "no-referrer",
      "X-Content-Type-Options": "nosniff",
      ...(https ? { "Strict-Transport-Security": "max-age=31536000" } : {}),
    },
    page: { "Content-Security-Policy": `${BASE_CSP}; frame-ancestors 'none'`, "X-Frame-Options": "DENY" },
    widget: { "Content-Security-Policy": `${BASE_CSP}; frame-ancestors ${hosts.length ? hosts.join(" ") : "'none'"}` },
  };
}

export function clientRouter(config: ClientConfig, dir = CLIENT_DIR): Router {
  const router = express.Router();
  const headers = pageHeaders(config);
  const settings = clientSettings(config);
  const common: RequestHandler = (_req, res, next) => {
    for (const [k, v] of Object.entries(headers.common)) res.setHeader(k, v);
    next();
  };
  router.use(common);
  router.get("/_parley/v1/client-config", (_req, res) => {
    res.json(settings);
  });
  if (!existsSync(dir)) {
    getLogger("http.client").warn({ dir }, "web client not built (npm run build:client); serving the API only");
  } else {
    router.use(
      express.static(dir, {
        index: "index.html",
        setHeaders: (res, file) => {
          const which = path.basename(file) === "widget.html" ? headers.widget : headers.page;
          for (const [k, v] of Object.entries(which)) res.setHeader(k, v);
        },
      }),
    );
  }
  return router;
}
