-- PostgreSQL twin of ../004-guests.sql (times in BIGINT).
-- Guests by link: users of Parley's namespace made for people without a Matrix account, each
-- for one meeting room, until the sweep deactivates them. The browser holds an opaque token;
-- only its hash is kept here (NULL once revoked). `deactivate_at` is when the sweep deactivates
-- the guest (NULL once done), so a restarted Parley still deactivates everyone it must.
CREATE TABLE guest (
  user_id        TEXT PRIMARY KEY,
  device_id      TEXT NOT NULL,
  token_hash     TEXT UNIQUE,
  room_id        TEXT NOT NULL,
  display_name   TEXT NOT NULL,
  state          TEXT NOT NULL CHECK (state IN ('creating', 'waiting', 'joined', 'left', 'deactivated')),
  created_at     BIGINT NOT NULL,
  deactivate_at  BIGINT,
  deactivated_at BIGINT,
  attempts       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX guest_due ON guest (deactivate_at) WHERE deactivate_at IS NOT NULL;
CREATE INDEX guest_room ON guest (room_id) WHERE state <> 'deactivated';
