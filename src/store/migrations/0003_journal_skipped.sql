-- A skipped action is journaled as `skipped`, with why in `error`, not as `failed`.
--
-- Until schema 2 a skipped action was stored as `failed` with its why behind a `skipped: `
-- prefix. SQLite cannot change a CHECK constraint in place, so the journal is rebuilt
-- with the new status allowed. Every row is kept, and those old skips are converted:
-- status `skipped`, the prefix removed, as trueup now writes them. A real failure never
-- had that prefix: trueup wrote it only for skips.
CREATE TABLE journal_v3 (
    run    TEXT NOT NULL,
    seq    INTEGER NOT NULL CHECK (seq >= 0),
    action TEXT NOT NULL CHECK (json_valid(action)),
    status TEXT NOT NULL CHECK (status IN ('planned', 'done', 'failed', 'skipped')),
    error  TEXT,
    at     TEXT NOT NULL,
    token  INTEGER NOT NULL,
    PRIMARY KEY (run, seq)
) STRICT;

INSERT INTO journal_v3 (run, seq, action, status, error, at, token)
SELECT run, seq, action,
       CASE WHEN status = 'failed' AND substr(error, 1, 9) = 'skipped: ' THEN 'skipped' ELSE status END,
       CASE WHEN status = 'failed' AND substr(error, 1, 9) = 'skipped: ' THEN substr(error, 10) ELSE error END,
       at, token
FROM journal;

DROP TABLE journal;
ALTER TABLE journal_v3 RENAME TO journal;

-- Dropped with the old table: the runs an apply left unfinished, found by index.
CREATE INDEX journal_planned ON journal (run) WHERE status = 'planned';
