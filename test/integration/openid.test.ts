// OpenID verification (flow 3, "Join") against real Synapses: B's homeserver issues a token for
// one of its users, and Parley's verifier checks it with B over federation (HTTPS with B's
// self-signed loopback certificate), finding B by server discovery from its IP-literal name.
// B lives on 127.0.0.12, so these verifiers allow private addresses, as the stack's Parleys do
// (discovery*.test.ts shows what happens when they are not allowed).
import fs from "node:fs/promises";
import path from "node:path";
import { Method } from "matrix-js-sdk";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { failure } from "../support/errors.ts";
import { OpenIdVerifier } from "../../appservice/src/matrix/openid.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { freePort } from "../../scripts/stack/ports.ts";
import { TestUser } from "../support/matrix.ts";

let stack: Stack;
let A: Institution, B: Institution;
let bob: TestUser;
const verifiers: OpenIdVerifier[] = [];

interface OpenIdToken {
  access_token: string;
  token_type: string;
  matrix_server_name: string;
  expires_in: number;
}

const requestToken = (user: TestUser) =>
  user.request<OpenIdToken>(Method.Post, `/user/${encodeURIComponent(user.userId)}/openid/request_token`, {});

function verifier(opts: ConstructorParameters<typeof OpenIdVerifier>[0] = {}): OpenIdVerifier {
  const v = new OpenIdVerifier({ tlsVerify: false, allowPrivateAddresses: true, ...opts });
  verifiers.push(v);
  return v;
}


beforeAll(async () => {
  const t0 = performance.now();
  stack = await startInstitutions({ count: 2, allow: (i, hosts) => hosts.filter((_, j) => j !== i), janus: false });
  [A, B] = stack.institutions as [Institution, Institution];
  const u = await B.registerUser("bob");
  bob = new TestUser(B.synapse.clientUrl, u.userId, u.accessToken);
  console.log(`[openid] stack of 2 up in ${Math.round(performance.now() - t0)} ms`);
});

let failed = false;
afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  for (const v of verifiers) v.close();
  await stack?.stop({ keep: failed || undefined });
});

describe("OpenID tokens from a real homeserver", () => {
  it("a token from B verifies as B's user, found by discovery from B's IP-literal server name", async () => {
    const token = await requestToken(bob);
    expect(token.matrix_server_name).toBe(B.serverName);
    expect(token.expires_in).toBeGreaterThan(0);
    // No overrides: "127.0.0.12:PORT" is an IP literal with a port, so discovery goes straight
    // to https://127.0.0.12:PORT, which is B's federation listener.
    const v = verifier();
    const t0 = performance.now();
    expect(await v.verify(token.access_token, token.matrix_server_name)).toEqual({ userId: bob.userId });
    const first = performance.now() - t0;
    const t1 = performance.now();
    expect(await v.verify(token.access_token, token.matrix_server_name)).toEqual({ userId: bob.userId });
    console.log(`[openid] verify: first ${first.toFixed(1)} ms, again (kept-alive connection) ${(performance.now() - t1).toFixed(1)} ms`);
  });

  it("a forged token is M_UNKNOWN_TOKEN", async () => {
    const err = await failure(verifier().verify("forgedTokenThatBNeverIssued", B.serverName));
    expect(err.errcode).toBe("M_UNKNOWN_TOKEN");
    expect(err.message).toBe("OpenID token is not valid (expired or forged)");
  });

  it("B's token claimed as A's is M_UNKNOWN_TOKEN: A is asked, and A never issued it", async () => {
    const token = await requestToken(bob);
    const err = await failure(verifier().verify(token.access_token, A.serverName));
    expect(err.errcode).toBe("M_UNKNOWN_TOKEN");
  });

  it("a server vouching for another server's user is M_FORBIDDEN (A's name routed to B)", async () => {
    // What a hostile or misconfigured server would do: answer for A's name with B's user.
    const token = await requestToken(bob);
    const v = verifier({ overrides: { [A.serverName]: B.synapse.federationUrl } });
    const err = await failure(v.verify(token.access_token, A.serverName));
    expect(err.errcode).toBe("M_FORBIDDEN");
    expect(err.message).toBe(`${A.serverName} vouched for ${bob.userId}, who is not one of its users`);
  });

  it("a server nobody answers for is M_UNAVAILABLE, quickly, naming the server but not the token nor the connection error", async () => {
    const token = await requestToken(bob);
    const port = await freePort(B.ip);
    const v = verifier({ overrides: { [B.serverName]: `https://${B.ip}:${port}` } });
    const t0 = performance.now();
    const err = await failure(v.verify(token.access_token, B.serverName));
    const ms = performance.now() - t0;
    expect(err.errcode).toBe("M_UNAVAILABLE");
    expect(err.message).toBe(`cannot check the OpenID token with ${B.serverName}`);
    expect(err.message).not.toContain(`${B.ip}:${port}`);
    expect(err.message).not.toContain("ECONNREFUSED");
    expect(err.message).not.toContain(token.access_token);
    expect(ms).toBeLessThan(5000);
    console.log(`[openid] unreachable server reported after ${ms.toFixed(1)} ms: ${err.message}`);
  });

  it("with certificate checks on, B's self-signed certificate is M_UNAVAILABLE; the TLS error is not told", async () => {
    const token = await requestToken(bob);
    const err = await failure(verifier({ tlsVerify: true }).verify(token.access_token, B.serverName));
    expect(err.errcode).toBe("M_UNAVAILABLE");
    expect(err.message).toBe(`cannot check the OpenID token with ${B.serverName}`);
    expect(err.message).not.toContain(token.access_token);
    console.log(`[openid] tlsVerify true: ${err.message}`);
  });

  it("with certificate checks on and B's certificate in caFile, the token verifies", async () => {
    const token = await requestToken(bob);
    const caFile = path.join(B.synapse.dir, "federation-tls.crt");
    await fs.access(caFile);
    const v = verifier({ tlsVerify: true, caFile });
    expect(await v.verify(token.access_token, B.serverName)).toEqual({ userId: bob.userId });
  });

  it("A's own users verify against A the same way", async () => {
    const u = await A.registerUser("alice");
    const alice = new TestUser(A.synapse.clientUrl, u.userId, u.accessToken);
    const token = await requestToken(alice);
    expect(await verifier().verify(token.access_token, token.matrix_server_name)).toEqual({ userId: alice.userId });
  });
});
