// Serves the web client (no CDN, no external assets) and the little it needs to start:
// which homeserver to log in to by default and how meeting aliases are spelled here.
import { existsSync } from "node:fs";
import path from "node:path";
import express, { type Router } from "express";
import { getLogger } from "../log.ts";

export const CLIENT_DIR = path.resolve(import.meta.dirname, "../../../client/dist");

export interface ClientSettings {
  homeserverUrl: string;
  serverName: string;
  aliasPrefix: string;
}

export function clientRouter(settings: ClientSettings, dir = CLIENT_DIR): Router {
  const router = express.Router();
  router.get("/_parley/v1/client-config", (_req, res) => {
    res.json(settings);
  });
  if (!existsSync(dir)) {
    getLogger("http.client").warn({ dir }, "web client not built (npm run build:client); serving the API only");
  } else {
    router.use(
      express.static(dir, {
        index: "index.html",
        setHeaders: (res) => {
          // connect-src *: the user's own homeserver and other institutions' call APIs.
          // blob: avatars fetched with the access token; wasm: matrix-js-sdk's Rust crypto.
          res.setHeader(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src * ws: wss:; img-src 'self' data: blob:; media-src 'self' blob:",
          );
          res.setHeader("X-Content-Type-Options", "nosniff");
        },
      }),
    );
  }
  return router;
}
