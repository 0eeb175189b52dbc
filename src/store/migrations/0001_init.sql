-- trueup state database, schema version 1.
--
-- Timestamps are RFC 3339 TEXT in UTC with whole seconds (`2025-10-02T12:00:00Z`), as
-- trueup writes them: fixed width, so they compare correctly as text. JSON columns hold
-- objects and are checked with json_valid. Tables are STRICT so a wrong type is refused.

CREATE TABLE projects (
    id     TEXT PRIMARY KEY NOT NULL,
    active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    domain TEXT
) STRICT;

CREATE TABLE services (
    project   TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    id        TEXT NOT NULL,
    "primary" INTEGER NOT NULL DEFAULT 0 CHECK ("primary" IN (0, 1)),
    PRIMARY KEY (project, id)
) STRICT;

-- At most one primary service per project; the writer checks there is at least one.
CREATE UNIQUE INDEX services_one_primary ON services (project) WHERE "primary" = 1;

CREATE TABLE deployments (
    id               TEXT PRIMARY KEY NOT NULL,
    project          TEXT NOT NULL REFERENCES projects (id),
    service          TEXT,
    type             TEXT NOT NULL CHECK (type IN ('upload', 'git', 'image')),
    phase            TEXT NOT NULL,
    phase_updated_at TEXT,
    heartbeat_at     TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    finished_at      TEXT,
    created_at       TEXT NOT NULL,
    source           TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(source)),
    metadata         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    owner            TEXT,
    lease_until      TEXT,
    CHECK ((owner IS NULL) = (lease_until IS NULL)),
    FOREIGN KEY (project, service) REFERENCES services (project, id)
) STRICT;

-- The stuck scan: deployments not in a final phase (no finished_at), by project and id.
CREATE INDEX deployments_open ON deployments (project, id) WHERE finished_at IS NULL;

CREATE TABLE deployment_logs (
    id         INTEGER PRIMARY KEY,
    deployment TEXT NOT NULL REFERENCES deployments (id),
    at         TEXT NOT NULL,
    level      TEXT NOT NULL CHECK (level IN ('debug', 'info', 'warn', 'error')),
    phase      TEXT,
    message    TEXT NOT NULL,
    metadata   TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata))
) STRICT;

CREATE INDEX deployment_logs_by_deployment ON deployment_logs (deployment, id);

-- One row per planned action of an apply run; `token` is the writer's fencing token.
CREATE TABLE journal (
    run    TEXT NOT NULL,
    seq    INTEGER NOT NULL CHECK (seq >= 0),
    action TEXT NOT NULL CHECK (json_valid(action)),
    status TEXT NOT NULL CHECK (status IN ('planned', 'done', 'failed')),
    error  TEXT,
    at     TEXT NOT NULL,
    token  INTEGER NOT NULL,
    PRIMARY KEY (run, seq)
) STRICT;

-- The single-writer lease: exactly one row. `token` grows by one at every acquisition.
CREATE TABLE lease (
    name  TEXT PRIMARY KEY NOT NULL CHECK (name = 'apply'),
    owner TEXT,
    until TEXT,
    token INTEGER NOT NULL DEFAULT 0,
    CHECK ((owner IS NULL) = (until IS NULL))
) STRICT;

INSERT INTO lease (name, owner, until, token) VALUES ('apply', NULL, NULL, 0);
