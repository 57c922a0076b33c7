-- Attendance and audit (docs/personal-data.md): who joined and left a call, who was admitted,
-- denied, muted, removed or banned, by whom, when. Users of other servers may be recorded under a
-- pseudonym (privacy.pseudonymizeRemoteUsers). Rows go after privacy.retentionDays, or at once on
-- an erasure. No key: rows are only appended, read by user and deleted by time or user.
CREATE TABLE audit_event (
  at      INTEGER NOT NULL,
  action  TEXT NOT NULL,
  room_id TEXT,
  call_id TEXT,
  actor   TEXT,
  target  TEXT,
  outcome TEXT,
  details TEXT
);
CREATE INDEX audit_event_at ON audit_event (at);
CREATE INDEX audit_event_actor ON audit_event (actor);
CREATE INDEX audit_event_target ON audit_event (target);
CREATE INDEX call_ended ON call (ended_at);

-- That an erasure happened, and how much it removed: never whose.
CREATE TABLE erasure (
  erased_at         INTEGER NOT NULL,
  rows_removed      INTEGER NOT NULL,
  guest_deactivated INTEGER NOT NULL
);
