-- Version 4: data safety (schema contract, verified outputs).
-- The schema a table was last published with: a JSON list of {"name", "type"} in column order (DuckDB
-- type names). A new extract is compared with it before its Parquet replaces the old one.
ALTER TABLE sync_state ADD COLUMN published_schema JSON;
-- Size and modification time of the published Parquet (`<bytes>:<mtime ns>`, or a digest over the
-- files of a partitioned table) when its hash was last computed: while it is unchanged the file is
-- trusted, when it differs the file is hashed again and compared with `hash`.
ALTER TABLE sync_state ADD COLUMN output_stamp VARCHAR;
