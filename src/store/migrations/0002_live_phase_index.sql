-- The reconciler reads every unfinished deployment (deployments_open) and every one in
-- the live phase; this index serves the second half, so neither reads the history.
CREATE INDEX deployments_by_phase ON deployments (phase, project, id);
