// What a Parley start loads: not matrix-appservice-bridge, whose loading took 0.8-0.9 s of every
// start (2.0-2.3 s of module loading in all, on the slow machine) for what only `parley -g` and
// the sample files use (the registration). Read in a child Node with a resolve hook, so the
// answer is the real module graph of start.ts, not this runner's.
import { execFileSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = path.resolve(import.meta.dirname, "../../..");

function specifiersLoadedBy(file: string): string[] {
  const script = `
    import { registerHooks } from "node:module";
    const seen = new Set();
    registerHooks({ resolve(specifier, context, next) { seen.add(specifier); return next(specifier, context); } });
    await import(${JSON.stringify(file)});
    process.stdout.write(JSON.stringify([...seen]));`;
  return JSON.parse(execFileSync(process.execPath, ["--no-warnings", "--input-type=module", "-e", script], { cwd: ROOT, encoding: "utf8" })) as string[];
}

describe("the modules a Parley start loads", () => {
  it("leave matrix-appservice-bridge out (the registration's, loaded only by parley -g and the samples)", () => {
    const start = specifiersLoadedBy(path.join(ROOT, "appservice/src/app/start.ts"));
    expect(start).toContain("matrix-js-sdk"); // the hook saw the graph
    expect(start.filter((s) => s.startsWith("matrix-appservice-bridge"))).toEqual([]);
    // The registration does load it: the check above can fail.
    expect(specifiersLoadedBy(path.join(ROOT, "appservice/src/matrix/registration.ts"))).toContain("matrix-appservice-bridge");
  });
});
