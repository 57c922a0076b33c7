// Managed child processes for the dev/test stack: output goes to a log file on disk, startup
// races a readiness check against early exit, and nothing outlives this Node process.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the process could not be spawned at all. */
  error?: Error | undefined;
}

export interface ManagedProcess {
  readonly name: string;
  readonly pid: number;
  /** The file stdout and stderr are appended to. */
  readonly logFile: string;
  /** Resolves (never rejects) once the process has exited. */
  readonly exited: Promise<ExitInfo>;
  /** True once the process has exited. */
  readonly hasExited: boolean;
  /** SIGTERM, then SIGKILL after `timeoutMs` (default: the start option, else 10 s). Idempotent. */
  stop(timeoutMs?: number): Promise<ExitInfo>;
  /** SIGKILL; resolves on exit. Idempotent. */
  kill9(): Promise<ExitInfo>;
  /** Last `lines` lines of the log file (and of any extra log files given at start). */
  tail(lines?: number): string;
}

export interface ReadyContext {
  proc: ManagedProcess;
  /** Aborted when the process exits or the readiness timeout passes. */
  signal: AbortSignal;
}

export interface StartProcessOptions {
  /** Short name used in messages and for the default log file name. */
  name: string;
  command: string;
  args: string[];
  /** Directory the log file is written to (created if missing). */
  dir: string;
  /** Log file path; default `${dir}/${name}.log`. Appended to, never truncated. */
  logFile?: string | undefined;
  /** Other log files whose tails are worth showing when startup fails (e.g. an app log). */
  extraLogFiles?: string[] | undefined;
  cwd?: string | undefined;
  env?: NodeJS.ProcessEnv | undefined;
  /** Resolves when the process is ready. Startup fails if the process exits first. */
  ready?: ((ctx: ReadyContext) => Promise<void>) | undefined;
  /** Default 60 s. */
  readyTimeoutMs?: number | undefined;
  /** Default SIGTERM→SIGKILL grace period for stop(); default 10 s. */
  stopTimeoutMs?: number | undefined;
  /**
   * Ask the kernel to SIGKILL the child if this Node process dies, even by SIGKILL
   * (via util-linux `setpriv --pdeathsig`, when available). Default true.
   */
  killWithParent?: boolean | undefined;
}

/**
 * Set (to anything) in the environment of the Node process starting the stack, every managed
 * process runs under `strace -D -f`, tracing the syscalls that address a peer (connect, sendto,
 * sendmsg, sendmmsg) into `<logFile>.net.strace`: the egress test (test/e2e/egress.test.ts) reads
 * them. -D keeps the traced program the direct child, so the pid, signals and exit status are its own.
 */
export const TRACE_NETWORK_ENV = "PARLEY_TRACE_NETWORK";
export const NETWORK_TRACE_SUFFIX = ".net.strace";

function networkTraced(command: string, args: string[], logFile: string): [string, string[]] {
  const strace = process.env["PARLEY_STRACE_BIN"] ?? "/usr/bin/strace";
  // -yy: each socket descriptor shows its protocol (TCP, UDP...); -s 0: no payloads in the trace.
  const traceArgs = ["-D", "-f", "--seccomp-bpf", "-qq", "-yy", "-s", "0", "-e", "trace=connect,sendto,sendmsg,sendmmsg", "-e", "signal=none"];
  return [strace, [...traceArgs, "-o", `${logFile}${NETWORK_TRACE_SUFFIX}`, "--", command, ...args]];
}

// Every child still running; killed synchronously when this Node process exits.
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const child of live) {
      try {
        if (child.pid !== undefined) process.kill(child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  });
}

/** SIGKILLs every managed child still running (e.g. from a signal handler). */
export function killAllManaged(): void {
  for (const child of live) {
    try {
      if (child.pid !== undefined) process.kill(child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

let setprivPath: string | null | undefined;
function findSetpriv(): string | null {
  if (setprivPath !== undefined) return setprivPath;
  setprivPath = null;
  for (const p of (process.env["PATH"] ?? "").split(path.delimiter).concat(["/usr/bin", "/bin"])) {
    if (!p) continue;
    const candidate = path.join(p, "setpriv");
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      setprivPath = candidate;
      break;
    } catch {
      // keep looking
    }
  }
  return setprivPath;
}

/** Last `lines` lines of a file, reading at most the final 64 KiB; "" if it does not exist. */
export function tailFile(file: string, lines = 40): string {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch {
    return "";
  }
  try {
    const size = fs.fstatSync(fd).size;
    const len = Math.min(size, 64 * 1024);
    const buf = Buffer.alloc(len);
    fs.readSync(fd, buf, 0, len, size - len);
    const all = buf.toString("utf8").split("\n");
    if (all.at(-1) === "") all.pop();
    return all.slice(-lines).join("\n");
  } finally {
    fs.closeSync(fd);
  }
}

function describeExit(e: ExitInfo): string {
  if (e.error) return `failed to spawn: ${e.error.message}`;
  return e.signal ? `killed by ${e.signal}` : `exited with code ${e.code}`;
}

/**
 * Spawns `command` with stdout/stderr appended to a log file and, if `ready` is given, waits for
 * it. Rejects (after killing the child) if the process exits before it is ready or the readiness
 * timeout passes; the error message carries the tail of the log(s). Logs stay on disk.
 */
export async function startProcess(opts: StartProcessOptions): Promise<ManagedProcess> {
  installExitHook();
  await fs.promises.mkdir(opts.dir, { recursive: true });
  const logFile = opts.logFile ?? path.join(opts.dir, `${opts.name}.log`);
  const stopDefault = opts.stopTimeoutMs ?? 10_000;

  const fd = fs.openSync(logFile, "a");
  fs.writeSync(
    fd,
    `=== ${new Date().toISOString()} starting ${opts.name}: ${opts.command} ${opts.args.join(" ")}\n`,
  );
  let [command, args] = process.env[TRACE_NETWORK_ENV] ? networkTraced(opts.command, opts.args, logFile) : [opts.command, opts.args];
  const setpriv = opts.killWithParent === false ? null : findSetpriv();
  if (setpriv) {
    args = ["--pdeathsig", "KILL", "--", command, ...args];
    command = setpriv;
  }
  let child: ChildProcess;
  try {
    child = spawn(command, args, {
      cwd: opts.cwd ?? opts.dir,
      env: opts.env ?? process.env,
      stdio: ["ignore", fd, fd],
    });
  } finally {
    fs.closeSync(fd);
  }
  live.add(child);

  let exitInfo: ExitInfo | undefined;
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once("exit", (code, signal) => {
      exitInfo ??= { code, signal };
      live.delete(child);
      resolve(exitInfo);
    });
    child.once("error", (error) => {
      // "error" without "exit" happens when spawn itself fails.
      if (child.pid === undefined) {
        exitInfo ??= { code: null, signal: null, error };
        live.delete(child);
        resolve(exitInfo);
      }
    });
  });

  const signalChild = (sig: NodeJS.Signals): void => {
    if (exitInfo || child.pid === undefined) return;
    try {
      process.kill(child.pid, sig);
    } catch {
      // already gone
    }
  };

  const allLogs = [logFile, ...(opts.extraLogFiles ?? [])];
  const proc: ManagedProcess = {
    name: opts.name,
    pid: child.pid ?? -1,
    logFile,
    exited,
    get hasExited() {
      return exitInfo !== undefined;
    },
    async stop(timeoutMs = stopDefault) {
      if (exitInfo) return exitInfo;
      signalChild("SIGTERM");
      const timer = setTimeout(() => signalChild("SIGKILL"), timeoutMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
    async kill9() {
      signalChild("SIGKILL");
      return exited;
    },
    tail(lines = 40) {
      return allLogs
        .map((f) => {
          const t = tailFile(f, lines);
          return t ? `--- ${f} (last ${lines} lines) ---\n${t}` : `--- ${f}: empty or missing ---`;
        })
        .join("\n");
    },
  };

  if (!opts.ready) return proc;

  const timeoutMs = opts.readyTimeoutMs ?? 60_000;
  const abort = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const failure = new Promise<never>((_, reject) => {
    void exited.then((e) => {
      const err = new Error(`${opts.name} ${describeExit(e)} before it was ready`);
      abort.abort(err);
      reject(err);
    });
    timer = setTimeout(() => {
      const err = new Error(`${opts.name} not ready after ${timeoutMs} ms`);
      abort.abort(err);
      reject(err);
    }, timeoutMs);
  });
  try {
    await Promise.race([opts.ready({ proc, signal: abort.signal }), failure]);
    return proc;
  } catch (err) {
    abort.abort(err);
    await proc.kill9();
    const msg = err instanceof Error ? err.message : String(err);
    throw new Error(`${msg}\n${proc.tail()}`, { cause: err });
  } finally {
    clearTimeout(timer);
    failure.catch(() => undefined);
  }
}
