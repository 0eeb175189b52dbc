-- The reconciler reads the finished releases created after an open deployment of their
-- project (they may supersede it) from `deployments_newest`, as it reads each project's
-- newest releases: a release created after another opened finished after it too, so it
-- is among its project's newest, on the index page just read, and the history costs no
-- second page per project. Only a release recorded as finished before it was created (a
-- clock set back in between) is not found that way: those are kept in an index of their
-- own, empty on a machine whose clock never went back. `deployments_created`, which
-- served that read, has no other use.
DROP INDEX deployments_created;
CREATE INDEX deployments_backwards ON deployments (project, created_at, phase) WHERE finished_at < created_at;
