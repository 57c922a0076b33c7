// A worker thread hosting synthetic participants for WorkerPopulation (population.ts). Messages:
// {op: "join", index, spec} | {op: "joinJanus", index, spec} | {op: "talk", index, on} | {op: "stats"} | {op: "settled"} |
// {op: "close"}, each with `req`; answered {req, ok, value} or {req, ok: false, error}.
import { parentPort } from "node:worker_threads";
import { createSfu, type Sfu } from "../../appservice/src/sfu/index.ts";
import { joinJanus, joinParley, type SyntheticHandle } from "./call.ts";
import type { JanusSpec, JoinSpec } from "./population.ts";

const here = new Map<number, SyntheticHandle>();
/** This worker's own connection to Janus, for baseline participants. */
let sfu: Promise<Sfu> | undefined;

type Message = { req: number } & (
  | { op: "join"; index: number; spec: JoinSpec }
  | { op: "joinJanus"; index: number; spec: JanusSpec }
  | { op: "talk"; index: number; on: boolean }
  | { op: "stats" }
  | { op: "settled" }
  | { op: "close" }
);

const ops: { [K in Message["op"]]: (m: Extract<Message, { op: K }>) => Promise<unknown> | unknown } = {
  join: async (m) => {
    here.set(m.index, await joinParley(m.spec));
  },
  joinJanus: async (m) => {
    const { janus, room, id, tuning } = m.spec;
    sfu ??= createSfu({ nodes: [{ id: room.node, url: janus.url, apiSecret: janus.apiSecret, adminKey: janus.adminKey }] });
    here.set(m.index, await joinJanus(await sfu, room, null, id, tuning));
  },
  talk: (m) => here.get(m.index)?.talk(m.on),
  stats: () => [...here].map(([i, h]) => [i, h.participant.stats()]),
  settled: () => Promise.all([...here.values()].map((h) => h.participant.settled())).then(() => undefined),
  close: async () => {
    await Promise.all([...here.values()].map((h) => h.close()));
    here.clear();
    await (await sfu)?.stop();
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
