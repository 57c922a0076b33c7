// A restarted SFU node lost its rooms: each active call's room there is made again (same id and
// secret, so stored references stay valid); the participants' SFU sessions died with the node
// and their clients are told to renegotiate (see CallMedia).
import { getLogger } from "../log.ts";
import type { CallStore, SfuRoomRecord } from "../store/store.ts";

export interface SfuRecoveryDeps {
  store: Pick<CallStore, "activeCalls" | "setCallSfu">;
  /** Makes the lost room again; the answer names the node it now lives on. */
  recreateRoom(room: SfuRoomRecord): Promise<SfuRoomRecord>;
}

export async function recoverLostRooms(deps: SfuRecoveryDeps, nodeId: string, lostRooms: string[]): Promise<void> {
  const log = getLogger("calls.recovery");
  const lost = (await deps.store.activeCalls()).filter((c) => c.sfu?.node === nodeId && lostRooms.includes(c.sfu.room));
  await Promise.all(
    lost.map(async (call) => {
      try {
        await deps.store.setCallSfu(call.callId, await deps.recreateRoom(call.sfu!));
        log.info({ callId: call.callId, nodeId }, "SFU room recreated after a node restart");
      } catch (err) {
        log.error({ err, callId: call.callId, nodeId }, "could not recreate the SFU room");
      }
    }),
  );
}
