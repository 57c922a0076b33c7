// The bot speaking in encrypted rooms: which rooms are encrypted (m.room.encryption, remembered
// once seen: encryption is never switched off), who must get the room key (joined and invited
// members), and a Homeserver port whose notices are Megolm-encrypted where the room asks for it.
// A room found unencrypted is remembered too, until its m.room.encryption event comes by in a
// transaction: transactions arrive in timeline order, so no command after it is answered in clear.
import type { Homeserver, Notice } from "../calls/ports.ts";
import { getLogger } from "../log.ts";
import type { CryptoHttp } from "./http.ts";
import type { MegolmSettings, OlmDevice } from "./olmDevice.ts";

const enc = encodeURIComponent;

function errcodeOf(err: unknown): string | undefined {
  const code = (err as { errcode?: unknown } | null)?.errcode;
  return typeof code === "string" ? code : undefined;
}

function positive(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) && v > 0 ? v : undefined;
}

function megolmSettings(content: Record<string, unknown>): MegolmSettings {
  return { rotationPeriodMs: positive(content.rotation_period_ms), rotationPeriodMsgs: positive(content.rotation_period_msgs) };
}

export class EncryptedRooms {
  private readonly settings = new Map<string, MegolmSettings>();
  private readonly clear = new Set<string>();
  private readonly device: Pick<OlmDevice, "encryptRoomEvent" | "userId" | "deviceId">;
  private readonly http: CryptoHttp;
  private readonly log = getLogger("crypto.rooms");

  constructor(device: Pick<OlmDevice, "encryptRoomEvent" | "userId" | "deviceId">, http: CryptoHttp) {
    this.device = device;
    this.http = http;
  }

  /** An m.room.encryption state event seen in a transaction. */
  noteEncryption(roomId: string, content: Record<string, unknown>): void {
    if (content.algorithm !== "m.megolm.v1.aes-sha2") {
      this.log.warn({ roomId, algorithm: content.algorithm }, "room uses an encryption algorithm the bot does not speak");
    }
    this.settings.set(roomId, megolmSettings(content));
    this.clear.delete(roomId);
  }

  /** The room's Megolm settings, or undefined when the room is not encrypted. */
  async encryption(roomId: string): Promise<MegolmSettings | undefined> {
    const known = this.settings.get(roomId);
    if (known) return known;
    if (this.clear.has(roomId)) return undefined;
    try {
      const content = await this.http.request<Record<string, unknown>>("GET", `/rooms/${enc(roomId)}/state/m.room.encryption/`);
      const settings = megolmSettings(content);
      this.settings.set(roomId, settings);
      return settings;
    } catch (err) {
      if (errcodeOf(err) !== "M_NOT_FOUND") throw err;
      this.clear.add(roomId);
      return undefined;
    }
  }

  /** Users whose devices must get the room key: joined and invited members. */
  async members(roomId: string): Promise<string[]> {
    const res = await this.http.request<{ chunk?: { state_key?: unknown; content?: { membership?: unknown } }[] }>(
      "GET",
      `/rooms/${enc(roomId)}/members`,
      undefined,
      { not_membership: "leave" },
    );
    const users = new Set<string>();
    for (const ev of res.chunk ?? []) {
      const m = ev.content?.membership;
      if (typeof ev.state_key === "string" && (m === "join" || m === "invite")) users.add(ev.state_key);
    }
    return [...users];
  }

  /** Sends an event encrypted with the room's Megolm session; the same txnId never posts twice. */
  async sendEncrypted(roomId: string, type: string, content: Record<string, unknown>, txnId: string, settings: MegolmSettings): Promise<void> {
    const members = await this.members(roomId);
    const encrypted = await this.device.encryptRoomEvent(roomId, type, content, members, settings);
    await this.http.request("PUT", `/rooms/${enc(roomId)}/send/m.room.encrypted/${enc(txnId)}`, encrypted, {
      user_id: this.device.userId,
      device_id: this.device.deviceId,
    });
  }

  /** Sends the notice Megolm-encrypted if the room is encrypted; false when it is not. */
  async sendNoticeIfEncrypted(roomId: string, notice: Notice, txnId: string): Promise<boolean> {
    const settings = await this.encryption(roomId);
    if (!settings) return false;
    const content: Record<string, unknown> = { msgtype: "m.notice", body: notice.text };
    if (notice.html) Object.assign(content, { format: "org.matrix.custom.html", formatted_body: notice.html });
    await this.sendEncrypted(roomId, "m.room.message", content, txnId, settings);
    return true;
  }
}

/** `inner`, except that notices to encrypted rooms go out Megolm-encrypted. */
export function withEncryptedNotices(inner: Homeserver, rooms: () => Promise<Pick<EncryptedRooms, "sendNoticeIfEncrypted">>): Homeserver {
  const sendNotice = async (roomId: string, notice: Notice, txnId: string): Promise<void> => {
    if (!(await (await rooms()).sendNoticeIfEncrypted(roomId, notice, txnId))) await inner.sendNotice(roomId, notice, txnId);
  };
  // Everything else is the inner port's, called on it (it is a class with state).
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === "sendNotice") return sendNotice;
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
