// A restarted SFU node lost its rooms (or a dead one was given up): each active call's room there
// is made again (same id and secret, so stored references stay valid; on a live node if its own
// is dead, and the call's record then names that node). The SFU waits for this before it closes
// the participants' lost sessions, which tells their clients to renegotiate (see CallMedia): they
// always find the room.
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
