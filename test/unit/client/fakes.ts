// Fakes for the client's I/O seams: a WebSocket, media tracks, and a tick helper.
import { setLogLevel } from "../../../client/src/log.ts";
import type { SocketLike } from "../../../client/src/rtc/signalling.ts";

// The client's module loggers stay quiet in unit tests unless something is really wrong.
setLogLevel("error");

export class FakeSocket implements SocketLike {
  static all: FakeSocket[] = [];
  readyState = 0;
  readonly url: string;
  readonly sent: Record<string, unknown>[] = [];
  closedWith: { code?: number; reason?: string } | null = null;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;

  constructor(url: string) {
    this.url = url;
    FakeSocket.all.push(this);
  }

  static last(): FakeSocket {
    return FakeSocket.all[FakeSocket.all.length - 1]!;
  }

  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }

  // ---- driven by the test ----
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(msg: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }

  receiveRaw(data: string): void {
    this.onmessage?.({ data });
  }

  /** The server side closes (or the network drops). */
  drop(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  lastSent(type?: string): Record<string, unknown> {
    const list = type ? this.sent.filter((m) => m.type === type) : this.sent;
    const m = list[list.length - 1];
    if (!m) throw new Error(`nothing of type ${type} sent`);
    return m;
  }

  /** Answers the latest request of `type` with a result. */
  answer(type: string, result: Record<string, unknown> = {}): void {
    this.receive({ type: "result", id: this.lastSent(type).id, ...result });
  }

  fail(type: string, errcode: string, error = "no"): void {
    this.receive({ type: "error", id: this.lastSent(type).id, errcode, error });
  }
}

export class FakeTrack extends EventTarget {
  enabled = true;
  readyState: "live" | "ended" = "live";
  readonly kind: "audio" | "video";
  readonly id: string;
  contentHint = "";
  private static n = 0;

  readonly deviceId: string;

  constructor(kind: "audio" | "video", deviceId = "default") {
    super();
    this.kind = kind;
    this.deviceId = deviceId;
    this.id = `${kind}-${++FakeTrack.n}`;
  }

  stop(): void {
    this.readyState = "ended";
  }

  getSettings(): { deviceId: string } {
    return { deviceId: this.deviceId };
  }

  /** The user stops a screen share from the browser's own bar. */
  end(): void {
    this.readyState = "ended";
    this.dispatchEvent(new Event("ended"));
  }
}

export const asTrack = (t: FakeTrack) => t as unknown as MediaStreamTrack;

/** Lets pending promise callbacks run. */
export async function tick(times = 5): Promise<void> {
  for (let i = 0; i < times; i++) await new Promise<void>((r) => queueMicrotask(r));
}
