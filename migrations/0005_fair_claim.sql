-- Fair claims across workspaces. A worker serving several workspaces claims round-robin: the
-- first due job of each workspace, then the second of each, and so on, each workspace's jobs in
-- claim order (priority, run_at, id). A mass send of 100,000 jobs in one workspace therefore
-- never makes another workspace's jobs wait behind it; each workspace drains at its own rate
-- limit. This index is that per-workspace walk; jobs_claim_idx stays the single-workspace path.
--
-- The priority column is indexed as -priority (bigint, so no overflow) on purpose: the fair claim
-- orders by that expression, which only this index provides. With priority DESC here the planner,
-- estimating `workspace = <one of several>` from statistics where one workspace holds almost every
-- row, chose the smaller jobs_claim_idx and walked a whole backlog to find another workspace's
-- jobs (measured: 290 ms per claim with 1,000,000 queued, instead of 0.1 ms).
CREATE INDEX jobs_claim_workspace_idx
    ON timelines.jobs (workspace, (-(priority::bigint)), run_at, id)
    WHERE state IN ('queued', 'retrying');
