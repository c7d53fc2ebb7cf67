-- Version 6: the instance's settings are recorded like any registered object, so a plan shows a change
-- to the time zone, the defaults or the server limits (docs/plan-apply.md). One row, id 'instance'.
CREATE TABLE instance_settings (
    id            VARCHAR PRIMARY KEY,
    spec_file     VARCHAR NOT NULL,
    spec_hash     VARCHAR NOT NULL,
    spec          JSON,
    registered_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);
