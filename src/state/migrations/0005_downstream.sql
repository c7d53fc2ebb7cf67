-- Version 5: keep last good downstream (docs/engine.md, "Data safety").
-- Each transform's and metric check's last outcome: ok, stale (it kept or was built from old data;
-- `reason` says why) or failed (`reason` is the error). `last_ok_at` is the last time it was ok.
CREATE TABLE transform_state (
    name        VARCHAR PRIMARY KEY,
    status      VARCHAR NOT NULL,             -- ok | stale | failed
    reason      VARCHAR,
    rows        BIGINT,                       -- rows of the published result
    last_ok_at  TIMESTAMP,
    updated_at  TIMESTAMP NOT NULL,
    run_id      VARCHAR
);

CREATE TABLE check_state (
    metric_id   VARCHAR PRIMARY KEY,
    status      VARCHAR NOT NULL,             -- ok | stale | failed
    reason      VARCHAR,
    last_ok_at  TIMESTAMP,
    updated_at  TIMESTAMP NOT NULL,
    run_id      VARCHAR
);

-- Whether each registered table's view is in the last published analytics file, and why not: a table
-- whose extract succeeded is still not queryable when its view does not bind.
CREATE TABLE publish_state (
    table_id    VARCHAR PRIMARY KEY,
    status      VARCHAR NOT NULL,             -- ok | failed
    reason      VARCHAR,
    updated_at  TIMESTAMP NOT NULL,
    run_id      VARCHAR
);
