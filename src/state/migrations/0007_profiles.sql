-- Version 7: table profiles (docs/profile.md). The `profiles` table of version 1 was never written;
-- it is replaced by one that also keeps which data the profile describes and the last failure.
-- A failed profile keeps the last good one: `profile` changes only on success, `error` only on
-- failure (and is cleared by the next success).
DROP TABLE profiles;
CREATE TABLE profiles (
    table_id     VARCHAR PRIMARY KEY,
    profile      JSON,                        -- the last good profile; null until one succeeded
    profiled_at  TIMESTAMP,
    stamp        VARCHAR,                     -- the data it was made from (files, sizes, times)
    run_id       VARCHAR,
    error        VARCHAR,                     -- the last attempt's error, when it failed
    failed_at    TIMESTAMP,
    failed_stamp VARCHAR                      -- the data that attempt read (not retried until it changes)
);
