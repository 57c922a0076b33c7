// Serves the web client (no CDN, no external assets) and the little it needs to start:
// which homeserver to log in to by default and how meeting aliases are spelled here.
import { existsSync } from "node:fs";
import path from "node:path";
import express, { type Router } from "express";

export const CLIENT_DIR = path.resolve(import.meta.dirname, "../../../client/public");

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
  if (existsSync(dir)) {
    router.use(
      express.static(dir, {
        index: "index.html",
        setHeaders: (res) => {
          res.setHeader("Content-Security-Policy", "default-src 'self'; connect-src *; img-src 'self' data:");
          res.setHeader("X-Content-Type-Options", "nosniff");
        },
      }),
    );
  }
  return router;
}
