// Test users via Synapse's shared-secret registration admin API
// (https://element-hq.github.io/synapse/latest/admin_api/register_api.html).
import crypto from "node:crypto";

export interface RegisteredUser {
  userId: string;
  accessToken: string;
  deviceId: string;
  password: string;
}

export interface RegisterOptions {
  admin?: boolean | undefined;
  /** Default: random. */
  password?: string | undefined;
}

async function readJson(res: Response, what: string): Promise<Record<string, unknown>> {
  const text = await res.text();
  if (!res.ok) throw new Error(`${what}: HTTP ${res.status}: ${text}`);
  return JSON.parse(text) as Record<string, unknown>;
}

export async function registerUser(
  hs: { clientUrl: string; registrationSharedSecret: string },
  localpart: string,
  opts: RegisterOptions = {},
): Promise<RegisteredUser> {
  const url = `${hs.clientUrl}/_synapse/admin/v1/register`;
  const password = opts.password ?? crypto.randomBytes(18).toString("base64url");
  const admin = opts.admin ?? false;

  const { nonce } = await readJson(await fetch(url), `GET ${url}`);
  if (typeof nonce !== "string") throw new Error(`GET ${url}: no nonce in answer`);

  // HMAC-SHA1 over nonce NUL username NUL password NUL ("admin" | "notadmin"), keyed with the
  // shared secret, hex encoded.
  const mac = crypto
    .createHmac("sha1", hs.registrationSharedSecret)
    .update(nonce)
    .update("\x00")
    .update(localpart)
    .update("\x00")
    .update(password)
    .update("\x00")
    .update(admin ? "admin" : "notadmin")
    .digest("hex");

  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ nonce, username: localpart, password, admin, mac }),
  });
  if (res.status === 400 && opts.password !== undefined) {
    // Idempotence across restarts in the same data dir: an existing user with a known
    // password just logs in (a new device and token).
    const text = await res.text();
    if ((JSON.parse(text) as { errcode?: unknown }).errcode === "M_USER_IN_USE") {
      return login(hs.clientUrl, localpart, opts.password);
    }
    throw new Error(`POST ${url} (${localpart}): HTTP 400: ${text}`);
  }
  const body = await readJson(res, `POST ${url} (${localpart})`);
  const { user_id: userId, access_token: accessToken, device_id: deviceId } = body;
  if (typeof userId !== "string" || typeof accessToken !== "string" || typeof deviceId !== "string") {
    throw new Error(`POST ${url}: unexpected answer ${JSON.stringify(body)}`);
  }
  return { userId, accessToken, deviceId, password };
}

/** Password login (m.login.password) for an existing local user. */
export async function login(clientUrl: string, localpart: string, password: string): Promise<RegisteredUser> {
  const url = `${clientUrl}/_matrix/client/v3/login`;
  const body = await readJson(
    await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: localpart }, password }),
    }),
    `POST ${url} (${localpart})`,
  );
  const { user_id: userId, access_token: accessToken, device_id: deviceId } = body;
  if (typeof userId !== "string" || typeof accessToken !== "string" || typeof deviceId !== "string") {
    throw new Error(`POST ${url}: unexpected answer ${JSON.stringify(body)}`);
  }
  return { userId, accessToken, deviceId, password };
}

/**
 * `count` users `<prefix>1` .. `<prefix><count>` (a password each: re-running against the same
 * data dir logs them in), registered `concurrency` at a time: synthetic participants of a
 * benchmark or a large-call test.
 */
export async function registerUsers(
  hs: { clientUrl: string; registrationSharedSecret: string },
  prefix: string,
  count: number,
  opts: { password: string; concurrency?: number; from?: number },
): Promise<RegisteredUser[]> {
  const from = opts.from ?? 1;
  const out: RegisteredUser[] = new Array(count);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < count; i = next++) out[i] = await registerUser(hs, `${prefix}${from + i}`, { password: opts.password });
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(count, opts.concurrency ?? 4)) }, worker));
  return out;
}
