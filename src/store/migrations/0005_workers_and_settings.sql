-- trueup runs deployments itself (`trueup deploy`, `trueup work`).
--
-- A worker's claim records its host, process id and process start time, so that on the
-- same host a claim whose process is gone (kill -9, a crash, a reboot) is known dead at
-- once: its deployment is resumable without waiting for `stuck_after`. All three are NULL
-- for a claim taken by a worker that did not record them (the PaaS's own workers).
ALTER TABLE deployments ADD COLUMN claim_host TEXT;
ALTER TABLE deployments ADD COLUMN claim_pid INTEGER CHECK (claim_pid IS NULL OR claim_pid > 0);
ALTER TABLE deployments ADD COLUMN claim_start INTEGER CHECK (claim_start IS NULL OR claim_start >= 0);

-- The queue: unfinished deployments nobody holds, oldest first, per project.
CREATE INDEX deployments_queue ON deployments (project, created_at, id) WHERE finished_at IS NULL;

-- The settings `trueup init` writes and every command reads (flags override them): the
-- proxy's address, the base domain, the upstream that serves webroots, limits.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;
