// The signed-in session, kept in localStorage so a meeting link opens without signing in again.
// What is read back is parsed, not trusted (another version of the client may have written it).

export interface MatrixSession {
  homeserverUrl: string;
  userId: string;
  deviceId: string;
  accessToken: string;
}

/** An SSO sign-in this browser tab started. */
export interface PendingSso {
  homeserverUrl: string;
  returnHash: string;
  nonce: string;
}

export type KeyValueStorage = Pick<Storage, "getItem" | "setItem" | "removeItem">;

const KEY = "parley.session.v1";
const PENDING_SSO = "parley.sso.pending.v1";

export function parseSession(raw: unknown): MatrixSession | null {
  if (typeof raw !== "object" || raw === null) return null;
  const r = raw as Record<string, unknown>;
  const fields = ["homeserverUrl", "userId", "deviceId", "accessToken"] as const;
  if (!fields.every((f) => typeof r[f] === "string" && (r[f] as string).length > 0)) return null;
  if (!/^https?:\/\//.test(r.homeserverUrl as string) || !(r.userId as string).startsWith("@")) return null;
  return { homeserverUrl: r.homeserverUrl as string, userId: r.userId as string, deviceId: r.deviceId as string, accessToken: r.accessToken as string };
}

export class SessionStore {
  private readonly storage: KeyValueStorage;
  private readonly transient: KeyValueStorage;

  /** `transient` keeps what only needs to survive the SSO redirect (sessionStorage). */
  constructor(storage: KeyValueStorage, transient: KeyValueStorage = storage) {
    this.storage = storage;
    this.transient = transient;
  }

  load(): MatrixSession | null {
    try {
      return parseSession(JSON.parse(this.storage.getItem(KEY) ?? "null"));
    } catch {
      return null;
    }
  }

  save(session: MatrixSession): void {
    this.storage.setItem(KEY, JSON.stringify(session));
  }

  clear(): void {
    this.storage.removeItem(KEY);
  }

  /**
   * Before the SSO redirect: which homeserver, where to go back to afterwards, and the nonce the
   * redirect URL carries (a loginToken is exchanged only when it comes back with it).
   */
  savePendingSso(pending: PendingSso): void {
    this.transient.setItem(PENDING_SSO, JSON.stringify(pending));
  }

  takePendingSso(): PendingSso | null {
    const raw = this.transient.getItem(PENDING_SSO);
    this.transient.removeItem(PENDING_SSO);
    try {
      const p = JSON.parse(raw ?? "null") as { homeserverUrl?: unknown; returnHash?: unknown; nonce?: unknown } | null;
      if (typeof p?.homeserverUrl !== "string" || typeof p.nonce !== "string" || !p.nonce) return null;
      return { homeserverUrl: p.homeserverUrl, returnHash: typeof p.returnHash === "string" ? p.returnHash : "", nonce: p.nonce };
    } catch {
      return null;
    }
  }
}

/**
 * localStorage/sessionStorage, or memory where the browser refuses them (a cross-origin widget
 * iframe with third-party storage blocked, a privacy mode): reading the property itself throws.
 */
export function safeStorage(kind: "localStorage" | "sessionStorage"): KeyValueStorage {
  try {
    const s = globalThis[kind];
    const probe = "parley.probe";
    s.setItem(probe, "1");
    s.removeItem(probe);
    return s;
  } catch {
    const mem = new Map<string, string>();
    return {
      getItem: (k) => mem.get(k) ?? null,
      setItem: (k, v) => void mem.set(k, v),
      removeItem: (k) => void mem.delete(k),
    };
  }
}
