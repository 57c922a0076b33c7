-- Call sessions outlive a Parley restart (docs/resilience.md): a restarted Parley knows each
-- session's user, call and device, and takes over its SFU session (`media`, what the SFU needs
-- to adopt it: session and handle ids, published streams) so that media never stops. Only a
-- hash of the session token is kept. `expires_at` bounds a session no socket holds; a row goes
-- when its session ends.
CREATE TABLE call_seat (
  token_hash TEXT PRIMARY KEY,
  user_id    TEXT NOT NULL,
  room_id    TEXT NOT NULL,
  call_id    TEXT NOT NULL,
  device_id  TEXT NOT NULL DEFAULT '',
  expires_at INTEGER,
  media      TEXT,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX call_seat_user ON call_seat (user_id);
