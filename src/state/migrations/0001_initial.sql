-- Version 1 of system.duckdb (DESIGN.md §6). Forward-only: later versions add files, never edit this one.

CREATE TABLE state_meta (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
-- The serial counts applies; a saved plan records it and is refused when it changed.
INSERT INTO state_meta VALUES ('serial', '0');

CREATE TABLE sources (
    name        VARCHAR PRIMARY KEY,
    source_type VARCHAR NOT NULL,
    description VARCHAR,
    spec_file   VARCHAR NOT NULL,
    spec_hash   VARCHAR NOT NULL,
    registered_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE table_registry (
    id            VARCHAR PRIMARY KEY,
    name          VARCHAR NOT NULL UNIQUE,
    source        VARCHAR NOT NULL,
    source_type   VARCHAR NOT NULL,
    bucket        VARCHAR,
    source_table  VARCHAR,
    query_mode    VARCHAR NOT NULL,
    sync_schedule VARCHAR,
    sync_mode     VARCHAR NOT NULL,
    cursor        VARCHAR,
    primary_key   VARCHAR[],
    description   VARCHAR,
    access        VARCHAR[],
    spec_file     VARCHAR NOT NULL,
    spec_hash     VARCHAR NOT NULL,
    registered_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE transforms (
    name         VARCHAR PRIMARY KEY,
    source       VARCHAR NOT NULL,
    materialized VARCHAR NOT NULL,
    sql          VARCHAR NOT NULL,
    inputs       VARCHAR[],
    description  VARCHAR,
    spec_file    VARCHAR NOT NULL,
    spec_hash    VARCHAR NOT NULL,
    registered_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE metric_definitions (
    id           VARCHAR PRIMARY KEY,          -- <category>/<name>
    category     VARCHAR NOT NULL,
    name         VARCHAR NOT NULL,
    display_name VARCHAR,
    description  VARCHAR,
    owner        VARCHAR,
    unit         VARCHAR,
    grains       VARCHAR[],
    sql          VARCHAR NOT NULL,
    tables       VARCHAR[],
    spec_file    VARCHAR NOT NULL,
    spec_hash    VARCHAR NOT NULL,
    last_check_at     TIMESTAMP,
    last_check_status VARCHAR,
    last_check_error  VARCHAR,
    registered_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE sync_state (
    table_id    VARCHAR PRIMARY KEY,
    last_sync   TIMESTAMP,
    last_cursor VARCHAR,
    rows        BIGINT,
    size_bytes  BIGINT,
    hash        VARCHAR,                        -- MD5 of the Parquet content
    status      VARCHAR,
    error       VARCHAR
);

CREATE TABLE sync_history (
    run_id      VARCHAR NOT NULL,
    table_id    VARCHAR NOT NULL,
    task        VARCHAR NOT NULL,
    started_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    rows        BIGINT,
    size_bytes  BIGINT,
    status      VARCHAR NOT NULL,
    error       VARCHAR
);

CREATE TABLE apply_log (
    serial      BIGINT PRIMARY KEY,
    spec_digest VARCHAR NOT NULL,
    plan        JSON NOT NULL,
    who         VARCHAR NOT NULL,
    applied_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    result      VARCHAR NOT NULL
);

CREATE SEQUENCE audit_log_id;
CREATE TABLE audit_log (
    id      BIGINT PRIMARY KEY DEFAULT nextval('audit_log_id'),
    occurred_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    who     VARCHAR NOT NULL,
    action  VARCHAR NOT NULL,
    object  VARCHAR,
    detail  JSON
);

CREATE TABLE users (
    name       VARCHAR PRIMARY KEY,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    disabled   BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE groups (
    name       VARCHAR PRIMARY KEY,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE group_members (
    group_name VARCHAR NOT NULL,
    user_name  VARCHAR NOT NULL,
    PRIMARY KEY (group_name, user_name)
);

CREATE TABLE tokens (
    id          VARCHAR PRIMARY KEY,
    user_name   VARCHAR NOT NULL,
    prefix      VARCHAR NOT NULL,               -- shown in listings; the token itself is never stored
    hash        VARCHAR NOT NULL,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    expires_at  TIMESTAMP,
    last_used_at TIMESTAMP,
    revoked_at  TIMESTAMP
);

CREATE TABLE table_grants (
    table_id   VARCHAR NOT NULL,
    group_name VARCHAR NOT NULL,
    PRIMARY KEY (table_id, group_name)
);

CREATE TABLE view_ownership (
    view_name VARCHAR PRIMARY KEY,
    source    VARCHAR NOT NULL,
    claimed_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE profiles (
    table_id    VARCHAR PRIMARY KEY,
    profiled_at TIMESTAMP NOT NULL,
    profile     JSON NOT NULL
);
