-- PostgreSQL twin of ../001-initial.sql (same number, same tables). Times are epoch ms in BIGINT
-- (INTEGER is 32-bit here); `seq` orders calls started in the same millisecond (SQLite's rowid).
CREATE TABLE appservice_txn (
  txn_id       TEXT PRIMARY KEY,
  completed_at BIGINT NOT NULL
);
CREATE INDEX appservice_txn_completed ON appservice_txn (completed_at);

CREATE TABLE processed_event (
  event_id     TEXT PRIMARY KEY,
  processed_at BIGINT NOT NULL
);
CREATE INDEX processed_event_at ON processed_event (processed_at);

CREATE TABLE meeting_alias (
  alias      TEXT PRIMARY KEY,
  room_id    TEXT UNIQUE,
  state      TEXT NOT NULL CHECK (state IN ('creating', 'ready')),
  created_at BIGINT NOT NULL
);

CREATE TABLE call (
  call_id        TEXT PRIMARY KEY,
  seq            BIGINT GENERATED ALWAYS AS IDENTITY,
  room_id        TEXT NOT NULL,
  origin         TEXT NOT NULL CHECK (origin IN ('alias', 'command')),
  started_by     TEXT NOT NULL,
  started_at     BIGINT NOT NULL,
  start_event_id TEXT,
  widget_id      TEXT,
  ended_at       BIGINT,
  ended_by       TEXT,
  end_event_id   TEXT
);
CREATE INDEX call_room_started ON call (room_id, started_at);
CREATE UNIQUE INDEX call_active_per_room ON call (room_id) WHERE ended_at IS NULL;
