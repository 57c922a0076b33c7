// Small type guards shared by the parsers of what arrives on the signalling socket.

export type R = Record<string, unknown>;
export type Kind = "audio" | "video";

export const isObj = (v: unknown): v is R => typeof v === "object" && v !== null && !Array.isArray(v);
export const isFeed = (v: unknown): v is string | number => typeof v === "string" || typeof v === "number";
export const isKind = (v: unknown): v is Kind => v === "audio" || v === "video";
/** A Matrix user id as far as a client needs to know: `@localpart:server`. */
export const isUserId = (v: unknown): v is string => typeof v === "string" && /^@[^:\s]+:\S+$/.test(v) && v.length <= 255;
/** A string or null; a missing field counts as null, any other type is reported. */
export function nullableString(v: unknown, field: string, errors: string[]): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v === "string") return v;
  errors.push(`${field} must be a string or null`);
  return null;
}
