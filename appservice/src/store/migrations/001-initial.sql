-- Appservice transactions already handled (idempotency by txnId, across restarts).
CREATE TABLE appservice_txn (
  txn_id       TEXT PRIMARY KEY,
  completed_at INTEGER NOT NULL
);
CREATE INDEX appservice_txn_completed ON appservice_txn (completed_at);

-- Events whose effects are done, so that a transaction redelivered after a crash
-- part-way through does not repeat them.
CREATE TABLE processed_event (
  event_id     TEXT PRIMARY KEY,
  processed_at INTEGER NOT NULL
);
CREATE INDEX processed_event_at ON processed_event (processed_at);

-- Meeting rooms made on demand from an alias. 'creating' rows are claims taken before the
-- homeserver is asked to create the room; a restart reconciles them with the room directory.
CREATE TABLE meeting_alias (
  alias      TEXT PRIMARY KEY,
  room_id    TEXT UNIQUE,
  state      TEXT NOT NULL CHECK (state IN ('creating', 'ready')),
  created_at INTEGER NOT NULL
);

-- Calls: at most one active call per room. The events that started and ended a call are kept
-- so that a command redelivered after a failure resumes its unfinished steps.
CREATE TABLE call (
  call_id        TEXT PRIMARY KEY,
  room_id        TEXT NOT NULL,
  origin         TEXT NOT NULL CHECK (origin IN ('alias', 'command')),
  started_by     TEXT NOT NULL,
  started_at     INTEGER NOT NULL,
  start_event_id TEXT,
  widget_id      TEXT,
  ended_at       INTEGER,
  ended_by       TEXT,
  end_event_id   TEXT
);
CREATE INDEX call_room_started ON call (room_id, started_at);
CREATE UNIQUE INDEX call_active_per_room ON call (room_id) WHERE ended_at IS NULL;
