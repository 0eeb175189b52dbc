-- The lease records its holder's host and process id, so that a holder on this host whose
-- process is gone (kill -9, a crash) is known dead at once, instead of only when its lease
-- lapses. Both are NULL while the lease is free, and for a lease an older trueup took:
-- such a holder is waited for until its lease lapses, as before.
ALTER TABLE lease ADD COLUMN host TEXT;
ALTER TABLE lease ADD COLUMN pid INTEGER;
