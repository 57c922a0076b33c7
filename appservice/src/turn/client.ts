// A TURN client just big enough to ask a real coturn what it thinks of a credential: Allocate
// (RFC 8656) over UDP with the long-term credential mechanism, CreatePermission and Refresh, each
// answered with the server's success or its ERROR-CODE. `parley doctor` uses it to check the
// deployment's TURN server with fresh credentials, the tests to check coturn's policy. (werift's
// TURN client only retransmits and times out on a refusal: both need the refusal itself.)
import { createHash, createHmac, randomBytes } from "node:crypto";
import dgram from "node:dgram";

const MAGIC = 0x2112a442;
const METHOD = { allocate: 0x003, refresh: 0x004, createPermission: 0x008 } as const;
const ATTR = {
  username: 0x0006, integrity: 0x0008, errorCode: 0x0009, lifetime: 0x000d, peer: 0x0012, realm: 0x0014, nonce: 0x0015,
  relayed: 0x0016, transport: 0x0019,
} as const;

export type TurnAnswer = { ok: true; relayed?: { ip: string; port: number } } | { ok: false; code: number; reason: string };

interface Parsed {
  cls: "success" | "error" | "other";
  txid: Buffer;
  attrs: Map<number, Buffer>;
}

function attr(type: number, value: Buffer): Buffer {
  const pad = (4 - (value.length % 4)) % 4;
  const head = Buffer.alloc(4);
  head.writeUInt16BE(type, 0);
  head.writeUInt16BE(value.length, 2);
  return Buffer.concat([head, value, Buffer.alloc(pad)]);
}

function xorAddress(ip: string, port: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(1, 1); // IPv4
  b.writeUInt16BE(port ^ (MAGIC >>> 16), 2);
  const n = ip.split(".").reduce((acc, o) => (acc << 8) | Number(o), 0) >>> 0;
  b.writeUInt32BE((n ^ MAGIC) >>> 0, 4);
  return b;
}

function readXorAddress(b: Buffer): { ip: string; port: number } {
  const port = b.readUInt16BE(2) ^ (MAGIC >>> 16);
  const n = (b.readUInt32BE(4) ^ MAGIC) >>> 0;
  return { ip: [24, 16, 8, 0].map((s) => (n >>> s) & 0xff).join("."), port };
}

function encode(method: number, txid: Buffer, attrs: Buffer[], key?: Buffer): Buffer {
  const head = Buffer.alloc(20);
  head.writeUInt16BE(method, 0); // class "request": no class bits
  head.writeUInt32BE(MAGIC, 4);
  txid.copy(head, 8);
  let body = Buffer.concat(attrs);
  if (key) {
    // MESSAGE-INTEGRITY covers the message up to itself, with the length counting it (RFC 5389 15.4).
    head.writeUInt16BE(body.length + 24, 2);
    const mac = createHmac("sha1", key).update(Buffer.concat([head, body])).digest();
    body = Buffer.concat([body, attr(ATTR.integrity, mac)]);
  }
  head.writeUInt16BE(body.length, 2);
  return Buffer.concat([head, body]);
}

function decode(msg: Buffer): Parsed | undefined {
  if (msg.length < 20 || msg.readUInt32BE(4) !== MAGIC) return undefined;
  const type = msg.readUInt16BE(0);
  const cls = (type & 0x0110) === 0x0100 ? "success" : (type & 0x0110) === 0x0110 ? "error" : "other";
  const attrs = new Map<number, Buffer>();
  for (let at = 20; at + 4 <= msg.length; ) {
    const t = msg.readUInt16BE(at);
    const len = msg.readUInt16BE(at + 2);
    attrs.set(t, msg.subarray(at + 4, at + 4 + len));
    at += 4 + len + ((4 - (len % 4)) % 4);
  }
  return { cls, txid: msg.subarray(8, 20), attrs };
}

function answerOf(p: Parsed): TurnAnswer {
  if (p.cls === "success") {
    const r = p.attrs.get(ATTR.relayed);
    return r ? { ok: true, relayed: readXorAddress(r) } : { ok: true };
  }
  const e = p.attrs.get(ATTR.errorCode);
  if (!e) return { ok: false, code: 0, reason: "no ERROR-CODE" };
  return { ok: false, code: (e.readUInt8(2) & 0x7) * 100 + e.readUInt8(3), reason: e.subarray(4).toString("utf8") };
}

/** One UDP 5-tuple to a TURN server: one allocation at most. */
export class TurnClient {
  private readonly socket = dgram.createSocket("udp4");
  private realm = "";
  private nonce: Buffer = Buffer.alloc(0);
  private key: Buffer | undefined;
  private username = "";
  private readonly server: { ip: string; port: number };

  private constructor(server: { ip: string; port: number }) {
    this.server = server;
  }

  static async open(server: { ip: string; port: number }, localIp?: string): Promise<TurnClient> {
    const p = new TurnClient(server);
    await new Promise<void>((resolve, reject) => {
      p.socket.once("error", reject);
      p.socket.bind(0, localIp ?? (server.ip.startsWith("127.") ? server.ip : undefined), () => resolve());
    });
    // A send that fails (no route, port unreachable) shows up as no answer, never as a crash.
    p.socket.on("error", () => undefined);
    return p;
  }

  /** One request, retransmitted on UDP loss (RFC 5389 7.2.1) until an answer comes. */
  private send(method: number, attrs: Buffer[], withKey: boolean): Promise<Parsed> {
    const txid = randomBytes(12);
    const auth = withKey && this.key
      ? [attr(ATTR.username, Buffer.from(this.username)), attr(ATTR.realm, Buffer.from(this.realm)), attr(ATTR.nonce, this.nonce)]
      : [];
    const msg = encode(method, txid, [...attrs, ...auth], withKey ? this.key : undefined);
    return new Promise<Parsed>((resolve, reject) => {
      let tries = 0;
      const fire = () => {
        if (++tries > 7) {
          cleanup();
          reject(new Error(`no answer from TURN ${this.server.ip}:${this.server.port}`));
          return;
        }
        this.socket.send(msg, this.server.port, this.server.ip);
        timer = setTimeout(fire, 250 * 2 ** (tries - 1));
      };
      const onMessage = (data: Buffer) => {
        const p = decode(data);
        if (!p || !p.txid.equals(txid)) return;
        cleanup();
        resolve(p);
      };
      const cleanup = () => {
        clearTimeout(timer);
        this.socket.off("message", onMessage);
      };
      let timer: NodeJS.Timeout | undefined;
      this.socket.on("message", onMessage);
      fire();
    });
  }

  /** Allocate with a username and password: the server's 401 challenge first, then the real request. */
  async allocate(username: string, password: string): Promise<TurnAnswer> {
    const transport = attr(ATTR.transport, Buffer.from([17, 0, 0, 0]));
    const challenge = await this.send(METHOD.allocate, [transport], false);
    const first = answerOf(challenge);
    if (first.ok || first.code !== 401) return first;
    this.realm = challenge.attrs.get(ATTR.realm)?.toString("utf8") ?? "";
    this.nonce = challenge.attrs.get(ATTR.nonce) ?? Buffer.alloc(0);
    this.username = username;
    this.key = createHash("md5").update(`${username}:${this.realm}:${password}`).digest();
    return answerOf(await this.send(METHOD.allocate, [transport], true));
  }

  /** Permission for the allocation to exchange data with `peerIp` (the server's peer policy decides). */
  async createPermission(peerIp: string): Promise<TurnAnswer> {
    return answerOf(await this.send(METHOD.createPermission, [attr(ATTR.peer, xorAddress(peerIp, 0))], true));
  }

  /** Refresh with lifetime 0: the allocation is released. */
  async release(): Promise<TurnAnswer> {
    const zero = Buffer.alloc(4);
    return answerOf(await this.send(METHOD.refresh, [attr(ATTR.lifetime, zero)], true));
  }

  close(): void {
    this.socket.close();
  }
}
