// Messages between the page (e2eeMedia.ts) and the E2EE worker (worker.ts).
import type { CipherStatus, KeyMode, MediaKind } from "./cipher.ts";

/** The options of a sender's or receiver's transform (RTCRtpScriptTransform options, or posted). */
export interface TransformOptions {
  operation: "encrypt" | "decrypt";
  kind: MediaKind;
  self: string;
  mode: KeyMode;
  receiverId?: string;
  participant?: string;
}

export type ToWorker =
  | { type: "init"; self: string; mode: KeyMode }
  | { type: "streams"; readable: ReadableStream; writable: WritableStream; options: TransformOptions }
  | { type: "setKey"; participant: string; index: number; key: Uint8Array }
  | { type: "setOwnKey"; index: number; key: Uint8Array; use: boolean }
  | { type: "useOwnKey"; index: number }
  | { type: "setCallKey"; index: number; key: Uint8Array; use: boolean }
  | { type: "forget"; participant: string }
  | { type: "bind"; receiverId: string; participant: string };

export type FromWorker =
  | ({ type: "status" } & CipherStatus)
  | { type: "error"; error: string }
  /** Video frames held for a key were passed on as it was set (the page's timeline marks it). */
  | { type: "released"; frames: number };
