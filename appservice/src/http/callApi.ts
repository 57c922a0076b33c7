// The call API: POST /_parley/v1/calls/join with a Matrix OpenID token and a room; the answer is
// a short-lived session for the signalling socket. Open to other origins (a user of another
// institution joins from their own Parley's client): bearer tokens only, no cookies.
import express, { type Router } from "express";
import { z } from "zod";
import type { CallService, CallSession } from "../calls/callService.ts";
import { ParleyError, type ErrCode } from "../errors.ts";
import { getLogger } from "../log.ts";
import { sendError } from "./errors.ts";

const joinBody = z.object({
  openid_token: z.object({
    access_token: z.string().max(4096),
    matrix_server_name: z.string().max(255),
    token_type: z.string().optional(),
    expires_in: z.number().optional(),
  }),
  room: z.string().min(1).max(255),
  /** Asked from the pre-join, before the user pressed Join (docs/join.md, "The grant in the pre-join"). */
  ahead: z.boolean().optional(),
});

const arrivingBody = z.object({
  session: z.string().min(1).max(256),
  device_id: z.string().min(1).max(255),
});

export interface CallApiOptions {
  signallingPath: string;
  onRefused?: (errcode: ErrCode) => void;
  /** A session granted ahead named its device: tell the call's seats (once per session). */
  onArriving?: (session: CallSession, deviceId: string) => void;
}

export function callApiRouter(calls: CallService, opts: CallApiOptions): Router {
  const log = getLogger("http.calls");
  const router = express.Router();
  router.use("/_parley/v1/calls", (req, res, next) => {
    res.setHeader("Access-Control-Allow-Origin", "*");
    res.setHeader("Access-Control-Allow-Methods", "POST, OPTIONS");
    res.setHeader("Access-Control-Allow-Headers", "Content-Type");
    if (req.method === "OPTIONS") return void res.status(204).end();
    next();
  });
  router.post("/_parley/v1/calls/join", async (req, res) => {
    const refuse = (err: ParleyError) => {
      opts.onRefused?.(err.errcode);
      sendError(res, err);
    };
    const parsed = joinBody.safeParse(req.body);
    if (!parsed.success) {
      const missingToken = parsed.error.issues.some((i) => i.path[0] === "openid_token");
      return refuse(
        missingToken
          ? new ParleyError("M_MISSING_TOKEN", "openid_token {access_token, matrix_server_name} is required")
          : new ParleyError("M_BAD_JSON", `expected {openid_token, room}: ${parsed.error.issues.map((i) => i.path.join(".")).join(", ")}`),
      );
    }
    const { openid_token: openid, room, ahead } = parsed.data;
    try {
      const grant = await calls.join({ openIdToken: openid.access_token, serverName: openid.matrix_server_name, room, ahead });
      log.info({ roomId: grant.roomId, callId: grant.callId, server: openid.matrix_server_name, ahead }, "call session granted");
      res.json({
        session: grant.session,
        expires_at: grant.expiresAt,
        call_id: grant.callId,
        room_id: grant.roomId,
        ice_servers: grant.iceServers,
        ice_transport_policy: grant.iceTransportPolicy,
        signalling: opts.signallingPath,
        ...(grant.devices ? { devices: grant.devices.map((d) => ({ user_id: d.userId, device_id: d.deviceId })) } : {}),
      });
    } catch (err) {
      if (err instanceof ParleyError) {
        log.info({ room, server: openid.matrix_server_name, errcode: err.errcode, why: err.message }, "call join refused");
        return refuse(err);
      }
      log.error({ err, room }, "call join failed");
      refuse(new ParleyError("M_UNKNOWN", "could not join the call"));
    }
  });
  // The pre-join's device, its keys up: the call's devices send it their media keys before its
  // Join (docs/join.md, "Keys at arrival, keys before the first sync"); or a device in the call
  // whose keys went up after its hello. The session token is the proof.
  router.post("/_parley/v1/calls/arriving", (req, res) => {
    const parsed = arrivingBody.safeParse(req.body);
    if (!parsed.success) {
      return sendError(res, new ParleyError("M_BAD_JSON", `expected {session, device_id}: ${parsed.error.issues.map((i) => i.path.join(".")).join(", ")}`));
    }
    try {
      const { session, first } = calls.arriving(parsed.data.session, parsed.data.device_id);
      if (first) opts.onArriving?.(session, parsed.data.device_id);
      res.json({});
    } catch (err) {
      if (err instanceof ParleyError) return sendError(res, err);
      log.error({ err }, "arriving failed");
      sendError(res, new ParleyError("M_UNKNOWN", "could not announce the device"));
    }
  });
  return router;
}
