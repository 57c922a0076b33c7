// The subcommands' argument handling and their answers to a config that does not load.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi, type MockInstance } from "vitest";
import { main } from "../../../appservice/src/app/main.ts";

let dir: string;
let stdout: MockInstance<typeof process.stdout.write>;
let err: MockInstance<typeof console.error>;

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "parley-commands-"));
  stdout = vi.spyOn(process.stdout, "write").mockImplementation(() => true);
  err = vi.spyOn(console, "error").mockImplementation(() => undefined);
});
afterEach(() => {
  vi.restoreAllMocks();
  rmSync(dir, { recursive: true, force: true });
});

const written = () => stdout.mock.calls.map((c) => String(c[0])).join("");

describe("parley doctor | backup | restore | janus-config", () => {
  it("doctor on a config that does not validate reports each problem as a config error, exit 1", async () => {
    const file = path.join(dir, "c.yaml");
    writeFileSync(file, "homeserver: {url: nope}\n");
    expect(await main(["doctor", "--config", file, "--json"])).toBe(1);
    const report = JSON.parse(written()) as { ok: boolean; findings: { check: string; status: string; message: string }[] };
    expect(report.ok).toBe(false);
    expect(report.findings.every((f) => f.check === "config" && f.status === "error")).toBe(true);
    expect(report.findings.map((f) => f.message)).toContain("homeserver.url: expected an absolute URL such as https://example.org");
  });

  it("usage mistakes exit 2 and name the problem", async () => {
    expect(await main(["doctor"])).toBe(2);
    expect(err.mock.calls.flat().join("\n")).toContain("parley doctor: a config file is required (-c)");
    expect(await main(["backup", "-c", "x.yaml", "--bogus"])).toBe(2);
  });

  it("backup on a config that does not load exits 1 and says why", async () => {
    expect(await main(["backup", "-c", path.join(dir, "missing.yaml"), "--to", dir])).toBe(1);
    expect(err.mock.calls.flat().join("\n")).toContain("cannot read");
  });
});
