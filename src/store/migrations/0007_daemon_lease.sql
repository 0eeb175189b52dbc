-- `trueup serve` holds a second lease, `daemon`, for its whole lifetime: one daemon per
-- state database. It takes the `apply` lease only for each cycle, so an operator's
-- `trueup apply` between cycles runs at once.
--
-- The lease table's CHECK allowed the `apply` row only, and SQLite cannot change a CHECK
-- in place: the table is rebuilt with both names allowed, keeping the `apply` row as it is
-- (holder, expiry, host, process and fencing token), then the free `daemon` row is added.
CREATE TABLE lease_v7 (
    name  TEXT PRIMARY KEY NOT NULL CHECK (name IN ('apply', 'daemon')),
    owner TEXT,
    until TEXT,
    token INTEGER NOT NULL DEFAULT 0,
    host  TEXT,
    pid   INTEGER,
    CHECK ((owner IS NULL) = (until IS NULL))
) STRICT;

INSERT INTO lease_v7 (name, owner, until, token, host, pid)
SELECT name, owner, until, token, host, pid FROM lease;

DROP TABLE lease;
ALTER TABLE lease_v7 RENAME TO lease;

INSERT INTO lease (name, owner, until, token) VALUES ('daemon', NULL, NULL, 0);
