// Trust boundaries of the OpenID check, against a real Synapse, Janus and Parley and real sockets
// inside scripts/isolated.sh's network namespace (no route out, so nothing could leave even if a
// check were broken): an OpenID token is good for one join, and server discovery does not
// connect to loopback or private addresses unless the operator named the server.
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { OpenIdVerifier, openIdTokenHash } from "../../appservice/src/matrix/openid.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { failure } from "../support/errors.ts";
import { TestUser, waitFor } from "../support/matrix.ts";

let stack: Stack;
let A: Institution;
let alice: TestUser;
let roomId: string;
let failed = false;
const cleanup: (() => unknown)[] = [];

beforeAll(async () => {
  // A's Parley federates with "localhost" too, so the call API gets as far as discovery for it.
  stack = await startInstitutions({ count: 1, allow: () => ["localhost"], janus: true });
  [A] = stack.institutions as [Institution];
  const u = await A.registerUser("alice");
  alice = new TestUser(A.synapse.clientUrl, u.userId, u.accessToken);
  roomId = await alice.join(A.alias("tokens"));
});

afterEach(async (ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
  for (const f of cleanup.splice(0).reverse()) await f();
});

afterAll(async () => {
  await stack?.stop({ keep: failed || undefined });
});

async function joinCall(body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${A.parley.url}/_parley/v1/calls/join`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** An HTTP server on `host` answering any request as userinfo for "@bob:<Host header>", counting connections. */
async function recorder(host: string) {
  const server = http.createServer((req, res) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ sub: `@bob:${req.headers.host}` }));
  });
  let connections = 0;
  server.on("connection", () => connections++);
  await new Promise<void>((r) => server.listen(0, host, r));
  cleanup.push(() => {
    server.closeAllConnections();
    return new Promise((r) => server.close(r));
  });
  return { port: (server.address() as AddressInfo).port, connections: () => connections };
}

function verifier(opts: ConstructorParameters<typeof OpenIdVerifier>[0] = {}): OpenIdVerifier {
  const v = new OpenIdVerifier({ tlsVerify: false, ...opts });
  cleanup.push(() => v.close());
  return v;
}

const refused = (serverName: string) => `this Parley does not check OpenID tokens with ${serverName}`;

describe("one OpenID token, one join (Parley's call API)", () => {
  it("the same token twice: the first join gets a session, the second is 401 M_UNKNOWN_TOKEN, generic", async () => {
    const token = await alice.openIdToken();
    const first = await joinCall({ openid_token: token, room: roomId });
    expect(first.status).toBe(200);
    expect(typeof first.json.session).toBe("string");
    const second = await joinCall({ openid_token: token, room: roomId });
    expect(second).toEqual({ status: 401, json: { errcode: "M_UNKNOWN_TOKEN", error: "OpenID token is not valid (expired or forged)" } });
    // Parley keeps a hash of the used token, until an hour (Synapse's token lifetime) has passed.
    const rows = A.parleyStore().db.prepare("SELECT token_hash, expires_at FROM openid_token_used").all() as { token_hash: string; expires_at: number }[];
    const row = rows.find((r) => r.token_hash === openIdTokenHash(A.serverName, token.access_token));
    expect(row?.expires_at).toBeGreaterThan(Date.now() + 3500_000);
    expect(JSON.stringify(rows)).not.toContain(token.access_token);
  });

  it("two concurrent joins with one token: exactly one gets a session", async () => {
    const token = await alice.openIdToken();
    const results = await Promise.all([joinCall({ openid_token: token, room: roomId }), joinCall({ openid_token: token, room: roomId })]);
    expect(results.map((r) => r.status).sort()).toEqual([200, 401]);
    expect(results.find((r) => r.status === 401)!.json.errcode).toBe("M_UNKNOWN_TOKEN");
  });

  it("a fresh token for every join is accepted each time", async () => {
    for (let i = 0; i < 2; i++) {
      expect((await joinCall({ openid_token: await alice.openIdToken(), room: roomId })).status).toBe(200);
    }
  });
});

describe("server discovery is not a port scanner", () => {
  it("a name resolving to 127.0.0.1 (localhost:<port>) is refused, generic M_FORBIDDEN, and no connection is made", async () => {
    const token = await alice.openIdToken();
    const l = await recorder("127.0.0.1");
    for (const name of [`localhost:${l.port}`, `127.0.0.1:${l.port}`, `[::ffff:127.0.0.1]:${l.port}`]) {
      const err = await failure(verifier().verify(token.access_token, name));
      expect({ name, errcode: err.errcode, status: err.status, message: err.message }).toEqual({
        name, errcode: "M_FORBIDDEN", status: 403, message: refused(name),
      });
    }
    expect(l.connections()).toBe(0);
  });

  it("the same name is reached when the operator lists it in openidOverrides (or allows private addresses)", async () => {
    const l = await recorder("127.0.0.1");
    const name = `localhost:${l.port}`;
    const viaOverride = verifier({ overrides: { [name]: `http://localhost:${l.port}` } });
    expect(await viaOverride.verify("someToken", name)).toEqual({ userId: `@bob:${name}` });
    expect(l.connections()).toBe(1);
    // Discovery itself connects (https, to this plain HTTP listener) once private addresses are allowed.
    const err = await failure(verifier({ allowPrivateAddresses: true }).verify("someToken", name));
    expect(err.errcode).toBe("M_UNAVAILABLE");
    expect(l.connections()).toBe(2);
  });

  it("a private address (10.99.0.1, on lo inside the namespace) is refused as IP literal and IPv4-mapped; no connection arrives", async () => {
    if (process.env.PARLEY_ISOLATED !== "1") throw new Error("run inside scripts/isolated.sh: this test adds 10.99.0.1 to lo");
    execFileSync("ip", ["addr", "add", "10.99.0.1/32", "dev", "lo"]);
    cleanup.push(() => execFileSync("ip", ["addr", "del", "10.99.0.1/32", "dev", "lo"]));
    const l = await recorder("10.99.0.1");
    for (const name of [`10.99.0.1:${l.port}`, `[::ffff:10.99.0.1]:${l.port}`, `[::ffff:a63:1]:${l.port}`]) {
      const err = await failure(verifier().verify("someToken", name));
      expect({ name, errcode: err.errcode, message: err.message }).toEqual({ name, errcode: "M_FORBIDDEN", message: refused(name) });
    }
    expect(l.connections()).toBe(0);
    // The listener is reachable: an override gets there.
    const name = `10.99.0.1:${l.port}`;
    expect(await verifier({ overrides: { [name]: `http://${name}` } }).verify("someToken", name)).toEqual({ userId: `@bob:${name}` });
    expect(l.connections()).toBe(1);
  });

  it("through the call API, a server that cannot be checked is told generically; the detail goes to Parley's log", async () => {
    // A's Parley allows private addresses (the stack's homeservers live on 127.0.0.x), so it
    // connects: https to a plain HTTP listener, which fails in the TLS handshake.
    const l = await recorder("127.0.0.1");
    const name = `localhost:${l.port}`;
    const token = await alice.openIdToken();
    const { status, json } = await joinCall({ openid_token: { ...token, matrix_server_name: name }, room: roomId });
    expect({ status, json }).toEqual({ status: 503, json: { errcode: "M_UNAVAILABLE", error: `cannot check the OpenID token with ${name}` } });
    expect(l.connections()).toBeGreaterThan(0);
    const line = await waitFor("the OpenID failure in Parley's log", async () =>
      (await fs.readFile(A.parley.logFile, "utf8")).split("\n").find((x) => x.includes("OpenID check: no answer") && x.includes(`${l.port}`)),
    );
    expect(line).toMatch(/"kind":"(tls|connect|protocol)"/);
    expect(line).not.toContain(token.access_token);
  });
});
