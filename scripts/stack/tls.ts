// Self-signed TLS certificates for the loopback stack, made with the openssl CLI.
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

export interface CertPaths {
  certPath: string;
  keyPath: string;
}

export interface SelfSignedOptions {
  dir: string;
  /** IPv4/IPv6 literal written as the certificate's CN and subjectAltName IP entry. */
  ip: string;
  /** File name stem; default "tls" (tls.crt / tls.key). */
  name?: string | undefined;
  /** Default 30. */
  days?: number | undefined;
}

/**
 * Writes a self-signed ECDSA P-256 certificate and unencrypted PKCS#8 key for `ip` into `dir`.
 * Reuses an existing pair with the same name, so calling it twice is harmless.
 */
export async function generateSelfSignedCert(opts: SelfSignedOptions): Promise<CertPaths> {
  const stem = opts.name ?? "tls";
  await fs.mkdir(opts.dir, { recursive: true });
  const certPath = path.join(opts.dir, `${stem}.crt`);
  const keyPath = path.join(opts.dir, `${stem}.key`);
  const exists = await Promise.all([certPath, keyPath].map((p) => fs.access(p).then(() => true, () => false)));
  if (exists.every(Boolean)) return { certPath, keyPath };

  await execFileP(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      String(opts.days ?? 30),
      "-subj",
      `/CN=${opts.ip}`,
      "-addext",
      `subjectAltName=IP:${opts.ip}`,
      "-addext",
      "basicConstraints=critical,CA:FALSE",
      "-keyout",
      keyPath,
      "-out",
      certPath,
    ],
    { timeout: 30_000 },
  );
  await fs.chmod(keyPath, 0o600);
  return { certPath, keyPath };
}
