import { describe, expect, it } from "vitest";
import { Lifecycle, withLifecycle } from "../../../appservice/src/app/lifecycle.ts";

const silent = { error: () => undefined };

/** A recorder of start and stop calls, and things that stop into it. */
function journal() {
  const events: string[] = [];
  const thing = (name: string) => {
    events.push(`start ${name}`);
    return { stop: async () => void events.push(`stop ${name}`) };
  };
  return { events, thing };
}

describe("Lifecycle", () => {
  it("a failed start unwinds exactly what started, in reverse, and rethrows", async () => {
    const { events, thing } = journal();
    const failure = new Error("homeserver unreachable");
    await expect(
      withLifecycle(silent, async (life) => {
        life.add("store", thing("store"));
        await life.start("sfu", async () => thing("sfu"));
        life.add("timer", 7, (n) => void events.push(`stop timer ${n}`));
        await life.start("listener", async () => {
          throw new Error("EADDRINUSE");
        }).catch(() => undefined); // a start that failed is not recorded
        life.add("signalling", thing("signalling"));
        throw failure;
      }),
    ).rejects.toBe(failure);
    expect(events).toEqual(["start store", "start sfu", "start signalling", "stop signalling", "stop timer 7", "stop sfu", "stop store"]);
  });

  it("stop() unwinds in reverse once; a failing stop is logged and the rest still stop", async () => {
    const { events, thing } = journal();
    const logged: unknown[] = [];
    const life = new Lifecycle({ error: (o: unknown) => void logged.push(o) });
    life.add("a", thing("a"));
    life.add("b", { stop: () => Promise.reject(new Error("stuck")) });
    life.add("c", thing("c"));
    expect(life.names()).toEqual(["a", "b", "c"]);
    await Promise.all([life.stop(), life.stop()]);
    await life.stop();
    expect(events).toEqual(["start a", "start c", "stop c", "stop a"]);
    expect(logged).toMatchObject([{ what: "b" }]);
    expect(life.names()).toEqual([]);
  });

  it("a handle returned by a wiring function is one more entry", async () => {
    const { events, thing } = journal();
    const wireCalls = () => thing("calls wiring");
    const result = await withLifecycle(silent, async (life) => {
      life.add("store", thing("store"));
      life.add("calls wiring", wireCalls());
      return life;
    });
    await result.stop();
    expect(events).toEqual(["start store", "start calls wiring", "stop calls wiring", "stop store"]);
    expect(() => result.add("late", thing("late"))).toThrow(/after stop/);
  });
});
