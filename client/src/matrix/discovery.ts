// Server discovery: the homeserver of a Matrix id from /.well-known/matrix/client on the id's
// server name, as Element does (matrix-js-sdk's AutoDiscovery, which also checks that the base
// URL answers /_matrix/client/versions). A user of another institution who opens this Parley's
// meeting link types their full Matrix id and signs in at their own homeserver, on the link they
// were given. The password goes only to an https homeserver, or to plain http on a loopback
// host when this Parley allows loopback http (test stacks, like call APIs in callTrust.ts).
import { AutoDiscovery, AutoDiscoveryAction, AutoDiscoveryError, type ClientConfig } from "matrix-js-sdk";
import { ParleyClientError } from "../errors.ts";
import { isLoopback } from "./callTrust.ts";

/** AutoDiscovery.findClientConfig's shape: a server name in, the spec's discovery states out. */
export type FindClientConfig = (serverName: string) => Promise<ClientConfig>;

/** "@alice:example.org" -> "example.org"; a bare user name (or anything else) -> null. */
export function serverNameOf(userId: string): string | null {
  const m = /^@[^:\s]+:([^\s]+)$/.exec(userId.trim());
  return m ? m[1]! : null;
}

const failed = (serverName: string, human: string, detail: string) =>
  new ParleyClientError("NO_HOMESERVER", "login", { human, detail: `discovery on ${serverName}: ${detail}` });

/**
 * The homeserver base URL of `serverName`, or a ParleyClientError whose words name the server
 * and what to do about it.
 */
export async function findHomeserver(
  serverName: string,
  opts: { insecureLoopback: boolean; find?: FindClientConfig },
): Promise<string> {
  const find = opts.find ?? ((name: string) => AutoDiscovery.findClientConfig(name));
  let config: ClientConfig;
  try {
    config = await find(serverName);
  } catch (err) {
    throw failed(serverName, `Couldn't look up the homeserver of ${serverName}.`, err instanceof Error ? err.message : String(err));
  }
  const hs = config["m.homeserver"];
  if (hs.state === AutoDiscoveryAction.SUCCESS && hs.base_url) return secureBaseUrl(serverName, hs.base_url, opts.insecureLoopback);
  if (hs.state === AutoDiscoveryAction.PROMPT) {
    throw failed(
      serverName,
      `${serverName} doesn't say where its homeserver is (it publishes no /.well-known/matrix/client). Enter your homeserver's address above and sign in again.`,
      "no .well-known/matrix/client",
    );
  }
  if (hs.base_url && (hs.error === AutoDiscoveryError.InvalidHomeserver || hs.error === AutoDiscoveryError.UnsupportedHomeserverSpecVersion)) {
    throw failed(serverName, `${serverName} names ${hostOf(hs.base_url)} as its homeserver, but it doesn't answer like a Matrix homeserver Parley can use.`, String(hs.error));
  }
  throw failed(
    serverName,
    `Couldn't find the homeserver of ${serverName}: its /.well-known/matrix/client couldn't be reached or read. Check the part of your Matrix ID after the colon.`,
    String(hs.error ?? hs.state),
  );
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

function secureBaseUrl(serverName: string, baseUrl: string, insecureLoopback: boolean): string {
  const u = new URL(baseUrl);
  if (u.protocol === "https:" || (u.protocol === "http:" && insecureLoopback && isLoopback(u.hostname))) return baseUrl.replace(/\/+$/, "");
  throw failed(
    serverName,
    `${serverName}'s homeserver (${u.host}) doesn't use a secure connection, so Parley won't send your password there.`,
    `insecure base_url ${baseUrl}`,
  );
}
