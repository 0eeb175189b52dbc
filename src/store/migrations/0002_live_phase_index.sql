-- The reconciler reads every unfinished deployment (deployments_open), every one in the
-- live phase (deployments_by_phase) and every finished one a worker still holds
-- (deployments_claimed), so that it never reads the history.
CREATE INDEX deployments_by_phase ON deployments (phase, project, id);
CREATE INDEX deployments_claimed ON deployments (project, id) WHERE owner IS NOT NULL;
-- The runs an apply left unfinished, found without reading the whole journal.
CREATE INDEX journal_planned ON journal (run) WHERE status = 'planned';
