// Runs the Parley CLI as an operator does: a child process, its exit status and output.
// PARLEY_MAIN points it (and the stack's Parley, scripts/stack/institutions.ts) at another
// entry point, e.g. the built dist/ copied away from the sources (scripts/dist-check.sh).
import { execFile } from "node:child_process";
import path from "node:path";

export const ROOT = path.resolve(import.meta.dirname, "../..");
export const MAIN = process.env["PARLEY_MAIN"] ?? path.join(ROOT, "appservice/src/app/main.ts");

/** `parley ARGS`; a non-zero exit status is a result, not a throw. */
export function parley(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { cwd: path.dirname(MAIN) }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}
