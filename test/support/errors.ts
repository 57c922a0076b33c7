import { expect } from "vitest";
import { ParleyError } from "../../appservice/src/errors.ts";

/** The ParleyError a promise rejects with (fails the test if it resolves or throws anything else). */
export async function failure(p: Promise<unknown>): Promise<ParleyError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ParleyError);
  return err as ParleyError;
}
