-- Version 2: plan and apply (DESIGN.md §7).
-- Every registered object keeps the canonical document it was applied from, so `plan` can diff the
-- specs against it field by field (the typed columns stay for queries and for other tools).
ALTER TABLE sources ADD COLUMN spec JSON;
ALTER TABLE table_registry ADD COLUMN spec JSON;
ALTER TABLE transforms ADD COLUMN spec JSON;
ALTER TABLE metric_definitions ADD COLUMN spec JSON;

-- Tasks an apply queued (extract, rebuild, publish, transform, check) that have not run yet. The
-- execution engine takes them from here; re-queuing the same task keeps one row.
CREATE TABLE pending_tasks (
    task      VARCHAR PRIMARY KEY,            -- '<kind>:<target>', e.g. 'extract:shop.orders'
    position  INTEGER NOT NULL,               -- order in the queuing plan (dependencies first)
    kind      VARCHAR NOT NULL,
    target    VARCHAR NOT NULL,
    after     VARCHAR[] NOT NULL,             -- tasks that must finish first
    reason    VARCHAR NOT NULL,
    serial    BIGINT NOT NULL,                -- the apply that queued it
    queued_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
