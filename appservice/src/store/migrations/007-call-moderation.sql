-- Moderation outlives a Parley restart (docs/resilience.md), as the call sessions do: a
-- participant a moderator muted stays muted, a stopped screen share stays stopped, raised hands
-- stay raised. Per call and user: who forced each mute (NULL: not forced), whether their share
-- was stopped, when their hand went up (NULL: down). A row goes when its user has none of these
-- left, and every row of a call when the call ends.
CREATE TABLE call_moderation (
  call_id         TEXT NOT NULL,
  user_id         TEXT NOT NULL,
  forced_audio_by TEXT,
  forced_video_by TEXT,
  share_stopped   INTEGER NOT NULL DEFAULT 0,
  hand_at         INTEGER,
  updated_at      INTEGER NOT NULL,
  PRIMARY KEY (call_id, user_id)
) WITHOUT ROWID;
CREATE INDEX call_moderation_user ON call_moderation (user_id);
