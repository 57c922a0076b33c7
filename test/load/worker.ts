// A worker thread hosting synthetic participants for WorkerPopulation (population.ts). Messages:
// {op: "join", index, spec} | {op: "talk", index, on} | {op: "stats"} | {op: "settled"} |
// {op: "close"}, each with `req`; answered {req, ok, value} or {req, ok: false, error}.
import { parentPort } from "node:worker_threads";
import { joinParley, type SyntheticHandle } from "./call.ts";
import type { JoinSpec } from "./population.ts";

const here = new Map<number, SyntheticHandle>();

type Message = { req: number } & (
  | { op: "join"; index: number; spec: JoinSpec }
  | { op: "talk"; index: number; on: boolean }
  | { op: "stats" }
  | { op: "settled" }
  | { op: "close" }
);

const ops: { [K in Message["op"]]: (m: Extract<Message, { op: K }>) => Promise<unknown> | unknown } = {
  join: async (m) => {
    here.set(m.index, await joinParley(m.spec));
  },
  talk: (m) => here.get(m.index)?.talk(m.on),
  stats: () => [...here].map(([i, h]) => [i, h.participant.stats()]),
  settled: () => Promise.all([...here.values()].map((h) => h.participant.settled())).then(() => undefined),
  close: async () => {
    await Promise.all([...here.values()].map((h) => h.close()));
    here.clear();
  },
};

parentPort!.on("message", async (m: Message) => {
  try {
    const value = await (ops[m.op] as (x: Message) => unknown)(m);
    if (m.req) parentPort!.postMessage({ req: m.req, ok: true, value });
  } catch (err) {
    if (m.req) parentPort!.postMessage({ req: m.req, ok: false, error: String(err) });
  }
});
