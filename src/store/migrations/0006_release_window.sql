-- The reconciler reads, of the finished deployments, only the newest few in a live phase
-- per project (the live release and its fallbacks), those created after a deployment
-- still open (which may supersede it), and those a worker holds: never the history.
-- Both indexes hold finished rows only, so the history costs one index entry each.
--
-- The newest finished deployments of a project, newest first, with their phase, so that
-- the few in a live phase are found without reading the table.
CREATE INDEX deployments_newest ON deployments (project, finished_at DESC, id DESC, phase)
    WHERE finished_at IS NOT NULL;
-- The finished deployments of a project by creation time, with their phase: those created
-- after an open deployment of the project.
CREATE INDEX deployments_created ON deployments (project, created_at, phase) WHERE finished_at IS NOT NULL;
