// Where a join's time goes: the client marks each step (client/src/timeline.ts) and these read
// the marks from the page and print their medians.
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Page, Request } from "playwright-core";
import { percentile } from "./lib.ts";

/** The join's timeline on the page: ms from the `join` mark to each later step (client/src/timeline.ts). */
export async function joinTimeline(page: Page): Promise<Record<string, number>> {
  return page.evaluate(() => {
    const marks = performance.getEntriesByType("mark").filter((m) => m.name.startsWith("parley:"));
    const join = marks.filter((m) => m.name === "parley:join").at(-1);
    const out: Record<string, number> = {};
    if (!join) return out;
    // The room's sync and crypto start before Join (feed-*, crypto-*), and so do a knock's steps
    // (knock, admitted, room-opened, prejoin-shown), the pre-join's announcement and the media keys
    // it brought (prejoin-announced, key-early): shown as negative times.
    const previous = marks.filter((m) => m.name === "parley:join" && m.startTime < join.startTime).at(-1)?.startTime ?? -Infinity;
    const before = /^parley:((feed|crypto)-|knock$|admitted$|room-opened$|prejoin-shown$|prejoin-announced$|key-early$)/;
    for (const m of marks) {
      const after = m.startTime >= join.startTime || (before.test(m.name) && m.startTime > previous);
      if (after && m.name !== "parley:join") out[m.name.slice(7)] ??= m.startTime - join.startTime;
    }
    return out;
  });
}

/**
 * The page-clock time of the first remote frame presented after `after` (the client's
 * `remote-painted` mark, a frame that came through decryption), as the page itself tells it (a
 * PerformanceObserver): nothing polls the page or its E2EE worker meanwhile, which a person's
 * browser does not have either (docs/join.md, ninth pass). Rejects after `timeoutMs`.
 */
export async function paintedAfter(page: Page, after: number, timeoutMs = 30_000): Promise<number> {
  return page.evaluate(
    ({ after, timeoutMs }) =>
      new Promise<number>((resolve, reject) => {
        const find = (entries: PerformanceEntryList) => entries.find((m) => m.name === "parley:remote-painted" && m.startTime > after);
        const already = find(performance.getEntriesByType("mark"));
        if (already) return resolve(already.startTime);
        const observer = new PerformanceObserver((list) => {
          const m = find(list.getEntries());
          if (!m) return;
          observer.disconnect();
          clearTimeout(timer);
          resolve(m.startTime);
        });
        observer.observe({ type: "mark" });
        const timer = setTimeout(() => {
          observer.disconnect();
          reject(new Error(`no remote frame painted within ${timeoutMs} ms`));
        }, timeoutMs);
      }),
    { after, timeoutMs },
  );
}

/**
 * Records the page's long tasks (its main thread busy 50 ms or more at a stretch) from its first
 * document on, for `longTasksAfterJoin`. Call before the page loads.
 */
export async function recordLongTasks(page: Page): Promise<void> {
  await page.addInitScript(() => {
    const w = window as unknown as { __parleyLongTasks: [number, number][] };
    w.__parleyLongTasks = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) w.__parleyLongTasks.push([e.startTime, e.duration]);
    }).observe({ type: "longtask", buffered: true });
  });
}

/** The long tasks' time (ms) between the page's last Join and `until` (page clock). */
export async function longTasksAfterJoin(page: Page, until: number): Promise<number> {
  return page.evaluate((until) => {
    const join = performance.getEntriesByName("parley:join", "mark").at(-1)?.startTime ?? until;
    const tasks = (window as unknown as { __parleyLongTasks?: [number, number][] }).__parleyLongTasks ?? [];
    return tasks.reduce((ms, [start, duration]) => ms + Math.max(0, Math.min(start + duration, until) - Math.max(start, join)), 0);
  }, until);
}

/** Prints the p50 (and each sample) of `longTasksAfterJoin` over the joins of `who`. */
/** One line of a trace: when (`at`, in ms from `t0`, right-aligned), who, and what. */
export function traceLine(t0: number, at: number, who: string, text: string): string {
  return `${(at - t0).toFixed(0).padStart(6)} ms  ${who}  ${text}`;
}

export function printLongTasks(who: string, busyMs: number[]): void {
  console.log(`the ${who}'s main thread in long tasks (50 ms or more) from Join to its first frame: p50 ${percentile(busyMs, 50).toFixed(0)} ms (per join: ${busyMs.map((b) => b.toFixed(0)).join(", ")})`);
}

/** Prints each step's p50 over the samples, in the order the steps happen. */
export function printTimeline(label: string, samples: Record<string, number>[], firstFrame: number[]): void {
  const steps = new Map<string, number[]>();
  for (const s of samples) for (const [k, v] of Object.entries(s)) (steps.get(k) ?? steps.set(k, []).get(k)!).push(v);
  const rows = [...steps].map(([k, v]) => [k, percentile(v, 50)] as const).sort((a, b) => a[1] - b[1]);
  rows.push(["first-frame", percentile(firstFrame, 50)]);
  console.log(`${label} timeline (p50 ms from Join): ${rows.map(([k, v]) => `${k} ${v.toFixed(0)}`).join(", ")}`);
  // The joins whose subscription was the one made in the pre-join (docs/join.md, seventeenth pass):
  // a Join pressed before its answer went out subscribes at Join instead.
  const painted = (with_: boolean) => samples.filter((s) => ("prepared-media" in s) === with_ && s["remote-painted"] !== undefined).map((s) => s["remote-painted"]!);
  const [on, off] = [painted(true), painted(false)];
  const p50 = (v: number[]) => (v.length ? `${percentile(v, 50).toFixed(0)} ms` : "none");
  console.log(`${label}s on the pre-join's media connection: ${on.length} of ${samples.length}; picture p50 ${p50(on)} on it, ${p50(off)} without`);
  // Each sample's last steps (the p50s above can hide one slow step in a few samples).
  const tail = ["key-out", "key-in", "held-released", "decrypted", "remote-painted"];
  const each = samples.map((s) => tail.filter((k) => s[k] !== undefined).map((k) => `${k} ${s[k]!.toFixed(0)}`).join(" "));
  console.log(`${label}, each (ms from Join): ${each.join("; ")}`);
}

/**
 * PARLEY_BENCH_TRACE=1: the HTTP requests of each page (labelled) that finish after `start(t0)`,
 * as "begin -> end ms  label METHOD path" from t0 (a request begun before t0 has a negative begin),
 * in the order they began: to see which of them a step waits for.
 */
export function traceRequests(pages: [string, Page][], beforeMs = Number(process.env.PARLEY_BENCH_TRACE_BEFORE_MS ?? 0)): { start(t0: number): void; stop(): string[] } {
  const done: { at: number; end: number; line: string }[] = [];
  const began = new Map<Request, number>();
  let t0 = Infinity;
  const offs = pages.map(([label, page]) => {
    const onRequest = (r: Request) => began.set(r, performance.now());
    const onFinished = (r: Request) => {
      const at = began.get(r);
      if (at === undefined) return;
      const path = new URL(r.url()).pathname.replace(/^\/_matrix\/client\/v3/, "").slice(0, 90);
      done.push({ at, end: performance.now(), line: `${label ? `${label.padEnd(6)} ` : ""}${r.method()} ${path}` });
    };
    page.on("request", onRequest);
    page.on("requestfinished", onFinished);
    return () => {
      page.off("request", onRequest);
      page.off("requestfinished", onFinished);
    };
  });
  return {
    start: (at) => void (t0 = at),
    stop: () => {
      for (const off of offs) off();
      // Those finished after the click, and PARLEY_BENCH_TRACE_BEFORE_MS before it (the pre-join's).
      return done
        .filter((r) => r.end >= t0 - beforeMs)
        .sort((a, b) => a.at - b.at)
        .map((r) => `${(r.at - t0).toFixed(0).padStart(6)} -> ${(r.end - t0).toFixed(0).padStart(6)} ms  ${r.line}`);
    },
  };
}

/**
 * How the benchmarks' users sign in: they type their user name and password, a key every
 * SIGN_IN_TYPE_MS ms (60: 1000 characters a minute, faster than a quick typist's 300-400), so a
 * sign-in takes about two seconds, as a person's does, and the device's crypto store readies
 * while it is typed (deviceCrypto.ts, readyNextDevice). PARLEY_BENCH_SIGN_IN_TYPE_MS=0 fills the
 * form at once, as the benchmarks did until 1 December: a sign-in within milliseconds of the
 * page's load, which left the crypto's start on the way of a Join pressed at once.
 */
const typed = Number(process.env.PARLEY_BENCH_SIGN_IN_TYPE_MS ?? 60);
export const SIGN_IN_TYPE_MS: number | undefined = Number.isFinite(typed) && typed > 0 ? typed : undefined;

/** The sign-in's pace, as the benchmarks' sample lines say it. */
export function signInPace(): string {
  return SIGN_IN_TYPE_MS === undefined ? "sign-in filled at once" : `sign-in typed (a key every ${SIGN_IN_TYPE_MS} ms)`;
}

/**
 * PARLEY_BENCH_PROFILE=1: the page's CPU profile from now, sampled every `intervalUs`, saved as a
 * .cpuprofile file for Chromium's DevTools (Performance panel) in the temporary directory, with the
 * page's marks (ms into the profile) beside it in a .marks.json file (a mark made twice: its
 * last). Null without the variable. `from`: when it started (this process's performance.now()).
 */
export async function cpuProfile(page: Page, intervalUs: number): Promise<{ from: number; save(name: string): Promise<string> } | null> {
  if (!process.env.PARLEY_BENCH_PROFILE) return null;
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Profiler.enable");
  await cdp.send("Profiler.setSamplingInterval", { interval: intervalUs });
  await cdp.send("Profiler.start");
  const from = performance.now();
  // The page's clock as the profile starts: its marks are written beside it on the profile's clock.
  const pageFrom = await page.evaluate(() => performance.now());
  return {
    from,
    async save(name) {
      const { profile } = await cdp.send("Profiler.stop");
      const file = path.join(tmpdir(), `${name}.cpuprofile`);
      writeFileSync(file, JSON.stringify(profile));
      const marks = await page.evaluate(() => performance.getEntriesByType("mark").map((m) => [m.name, m.startTime] as const)).catch(() => []);
      writeFileSync(path.join(tmpdir(), `${name}.marks.json`), JSON.stringify(Object.fromEntries(marks.map(([n, t]) => [n, Math.round(t - pageFrom)]))));
      return file;
    },
  };
}

/**
 * PARLEY_BENCH_TRACE=1: the video key-frame traffic of a page's peer connections while traced,
 * polled every 5 ms: each rise of a sender's key frame requests received (`pliCount`,
 * `firCount`) and key frames encoded (per simulcast layer), and of a receiver's requests sent
 * and its first packets and key frames. stop(t0Epoch) gives the lines in ms from `t0Epoch` (an
 * epoch time, the trace's start), to tell a key frame asked late from one asked and not answered.
 */
export async function watchKeyFrames(page: Page, label: string): Promise<{ stop(t0Epoch: number): Promise<string[]> }> {
  await page.evaluate(() => {
    const w = window as unknown as { __parleyPcs?: RTCPeerConnection[]; __kf?: { lines: [number, string][]; on: boolean } };
    const kf = { lines: [] as [number, string][], on: true };
    w.__kf = kf;
    const last = new Map<string, number>();
    const poll = async () => {
      if (!kf.on) return;
      for (const pc of (w.__parleyPcs ?? []).filter((p) => p.connectionState !== "closed")) {
        (await pc.getStats()).forEach((s: Record<string, unknown>) => {
          if (s.kind !== "video" || (s.type !== "outbound-rtp" && s.type !== "inbound-rtp")) return;
          const fields = s.type === "outbound-rtp" ? ["pliCount", "firCount", "keyFramesEncoded"] : ["pliCount", "firCount", "packetsReceived", "keyFramesDecoded"];
          for (const f of fields) {
            const id = `${s.type === "outbound-rtp" ? `out ${String(s.rid ?? "")}` : `in ${String(s.mid ?? "")}`} ${f}`;
            const v = Number(s[f] ?? 0);
            const before = last.get(`${String(s.id)} ${f}`);
            last.set(`${String(s.id)} ${f}`, v);
            // A sender's first sample sets its counts; after it each rise is logged (a receiver's
            // packets only on their first).
            const from = before ?? (s.type === "outbound-rtp" ? v : 0);
            if (v <= from || (f === "packetsReceived" && from > 0)) continue;
            kf.lines.push([Date.now(), `${id} ${from} -> ${v}`]);
          }
        });
      }
      setTimeout(() => void poll(), 5);
    };
    void poll();
  });
  return {
    stop: async (t0Epoch) => {
      const lines = await page.evaluate(() => {
        const w = window as unknown as { __kf?: { lines: [number, string][]; on: boolean } };
        if (w.__kf) w.__kf.on = false;
        return w.__kf?.lines ?? [];
      });
      return lines.map(([at, line]) => `${(at - t0Epoch).toFixed(0).padStart(6)} ms  ${label.padEnd(6)} ${line}`);
    },
  };
}
