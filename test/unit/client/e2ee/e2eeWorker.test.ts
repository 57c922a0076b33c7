// The call's E2EE worker started while the pre-join shows (warmE2eeWorker) and taken by the next
// call: one spare at most, never shared between two calls, none where frames cannot be transformed.
import { afterEach, describe, expect, it, vi } from "vitest";
import { createE2eeWorker, warmE2eeWorker } from "../../../../client/src/rtc/e2ee/e2eeMedia.ts";

let started: string[] = [];

class FakeWorker {
  readonly n: number;
  constructor(_url: URL, opts: { name?: string }) {
    started.push(opts.name ?? "");
    this.n = started.length;
  }
  addEventListener(): void {}
  postMessage(): void {}
  terminate(): void {}
}

/** A browser with RTCRtpScriptTransform on senders and receivers (what E2EE needs). */
function transformingBrowser(): void {
  // (An attribute on the prototype, as the browser's: what browserTransformApi looks for.)
  class Sender {
    get transform(): null {
      return null;
    }
  }
  class Receiver {
    get transform(): null {
      return null;
    }
  }
  vi.stubGlobal("RTCRtpScriptTransform", class {});
  vi.stubGlobal("RTCRtpSender", Sender);
  vi.stubGlobal("RTCRtpReceiver", Receiver);
}

afterEach(() => {
  // Whatever spare a test left is taken, so the next starts with none.
  createE2eeWorker();
  vi.unstubAllGlobals();
  started = [];
});

describe("the E2EE worker warmed in the pre-join", () => {
  it("is started once however often the pre-join warms it, and the next call takes it; the call after gets a new one", () => {
    vi.stubGlobal("Worker", FakeWorker);
    transformingBrowser();
    warmE2eeWorker();
    warmE2eeWorker();
    expect(started).toEqual(["parley-e2ee"]);
    const first = createE2eeWorker() as unknown as FakeWorker;
    expect(first.n).toBe(1);
    expect(started).toHaveLength(1);
    const second = createE2eeWorker() as unknown as FakeWorker;
    expect(second).not.toBe(first);
    expect(started).toHaveLength(2);
  });

  it("is not started where frames cannot be transformed (no E2EE there)", () => {
    vi.stubGlobal("Worker", FakeWorker);
    warmE2eeWorker();
    expect(started).toEqual([]);
  });
});
