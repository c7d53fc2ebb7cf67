-- Version 3: the execution engine (DESIGN.md §8).
-- A fingerprint of each table's input at its last successful extract: equal means unchanged, and the
-- extract is skipped.
ALTER TABLE sync_state ADD COLUMN fingerprint VARCHAR;
ALTER TABLE sync_history ADD COLUMN duration_ms BIGINT;
ALTER TABLE sync_history ADD COLUMN detail VARCHAR;

-- One row per run (`pipeline run`, the tasks of an apply, a scheduled run); its tasks are in
-- sync_history under the same run_id.
CREATE TABLE runs (
    run_id      VARCHAR PRIMARY KEY,
    trigger     VARCHAR NOT NULL,             -- run | apply | schedule | api
    who         VARCHAR NOT NULL,
    started_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP NOT NULL,
    status      VARCHAR NOT NULL,             -- ok | failed | cancelled
    tasks       INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    skipped     INTEGER NOT NULL,
    published   BOOLEAN NOT NULL
);
