//! The keboola connector end to end, against a fake Keboola Storage API on 127.0.0.1 (its wire
//! format follows the documented one; see tests/support/fake_keboola.rs).

#[path = "../support/fake_keboola.rs"]
#[allow(dead_code)]
mod fake_keboola;

use crate::common::{secrets, Instance};
use fake_keboola::{
    FakeKeboola, GzipFault, Route, Storage, WhereFilter, FAKE_AWS_ACCESS_KEY_ID,
    FAKE_AWS_SECRET_ACCESS_KEY, FAKE_AWS_SESSION_TOKEN, FAKE_GCS_ACCESS_TOKEN,
    FAKE_PRESIGNED_SECURITY_TOKEN, FAKE_PRESIGNED_SIGNATURE, FAKE_PROJECT_ID,
};
use std::process::Output;

fn orders_fake() -> FakeKeboola {
    let fake = FakeKeboola::start();
    fake.add_bucket("in.c-shop", "Shop exports");
    fake.add_table(
        "in.c-shop.orders",
        &["order_id", "amount", "status"],
        &["order_id"],
        "One row per order",
    );
    fake.set_rows(
        "in.c-shop.orders",
        vec![
            row(&["1", "10.5", "paid"]),
            row(&["2", "7", "paid"]),
            row(&["3", "1.25", "has \"quotes\", and a comma"]),
        ],
        1_700_000_000,
    );
    fake
}

fn row(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn instance(fake: &FakeKeboola, sync: &str) -> Instance {
    Instance::from_files(&[
        ("config/instance.yaml", "name: kbc\ntimezone: UTC\n"),
        (
            "pipelines/kbc.yaml",
            &format!(
                "type: keboola\nconnection:\n  url: {}\n  token_env: PIPELINE_TEST_KBC_TOKEN\n",
                fake.url()
            ),
        ),
        (
            "registry/kbc.yaml",
            &format!(
                "tables:\n  - source: kbc\n    bucket: in.c-shop\n    source_table: orders\n    sync: {sync}\n"
            ),
        ),
    ])
}

fn pipeline(inst: &Instance, fake: &FakeKeboola, args: &[&str]) -> Output {
    pipeline_env(inst, fake, args, &[])
}

fn pipeline_env(
    inst: &Instance,
    fake: &FakeKeboola,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    inst.cmd()
        .args(args)
        .env("PIPELINE_TEST_KBC_TOKEN", fake.token())
        .env("PIPELINE_KEBOOLA_FAST_RETRY", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Stdout and stderr together.
fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that none of `secrets` is in the command output, the state file or a file storage
/// request's Storage-token header, and that the Storage token reached no file storage request.
fn assert_secrets_kept(inst: &Instance, fake: &FakeKeboola, output: &str, secrets: &[&str]) {
    let state = std::fs::read(inst.state_path()).unwrap();
    for secret in secrets.iter().chain([&fake.token()]) {
        assert!(
            !output.contains(secret),
            "{secret} in the output:\n{output}"
        );
        assert!(
            !state.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} in the state"
        );
    }
    assert!(!fake.token_sent_to_file_storage());
    assert!(!fake.tokens_seen_in_urls());
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn query(inst: &Instance, fake: &FakeKeboola, sql: &str) -> String {
    ok(pipeline(inst, fake, &["query", "--format", "csv", sql]))
}

#[test]
fn a_keboola_table_is_exported_to_parquet_and_queryable_with_its_column_names() {
    let fake = orders_fake();
    let inst = instance(&fake, "{ mode: full, primary_key: [order_id] }");
    let out = pipeline(&inst, &fake, &["apply", "--auto-approve"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert_eq!(
        query(&inst, &fake, "select order_id, amount, status from orders order by 1"),
        "order_id,amount,status\n1,10.5,paid\n2,7,paid\n3,1.25,\"has \"\"quotes\"\", and a comma\"\n"
    );
    assert!(inst
        .path()
        .join("data/extracts/kbc/data/orders.parquet")
        .is_file());
    // The token never reaches output, URLs or the state.
    assert!(!all.contains(fake.token()));
    assert!(!fake.tokens_seen_in_urls());
    let state = std::fs::read(inst.state_path()).unwrap();
    assert!(!state
        .windows(fake.token().len())
        .any(|w| w == fake.token().as_bytes()));
    // Unchanged in Keboola: not exported again.
    let exports = fake.requests(Route::Export);
    ok(pipeline(&inst, &fake, &["run", "-q"]));
    assert_eq!(fake.requests(Route::Export), exports);
}

#[test]
fn server_errors_and_rate_limits_are_retried() {
    let fake = orders_fake();
    let inst = instance(&fake, "{ mode: full }");
    fake.fail_next(Route::Export, 2, 503);
    fake.rate_limit_next(Route::Job, 1, 1);
    fake.truncate_next_slice();
    ok(pipeline(&inst, &fake, &["apply", "--auto-approve", "-q"]));
    assert_eq!(fake.requests(Route::Export), 3, "two 503s, then success");
    assert_eq!(
        query(&inst, &fake, "select count(*) from orders"),
        "count_star()\n3\n"
    );
}

#[test]
fn a_failed_job_is_reported_with_keboolas_message_and_the_previous_data_stays() {
    let fake = orders_fake();
    let inst = instance(&fake, "{ mode: full }");
    ok(pipeline(&inst, &fake, &["apply", "--auto-approve", "-q"]));
    fake.set_rows(
        "in.c-shop.orders",
        vec![row(&["9", "1", "x"])],
        1_700_000_100,
    );
    fake.fail_next_job("Table export failed: warehouse is unavailable");
    let out = pipeline(&inst, &fake, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warehouse is unavailable"), "{err}");
    assert_eq!(
        query(&inst, &fake, "select count(*) from orders"),
        "count_star()\n3\n"
    );
    // Persistent server errors end in a clear error too, after the retries.
    fake.fail_next(Route::Detail, 100, 500);
    let out = pipeline(&inst, &fake, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 500"));
    assert_eq!(
        query(&inst, &fake, "select count(*) from orders"),
        "count_star()\n3\n"
    );
}

#[test]
fn incremental_sync_fetches_only_changes_and_merges_them_by_key() {
    let fake = orders_fake();
    let inst = instance(&fake, "{ mode: incremental, primary_key: [order_id] }");
    ok(pipeline(&inst, &fake, &["apply", "--auto-approve", "-q"]));
    assert_eq!(
        fake.last_changed_since(),
        None,
        "the first sync reads everything"
    );
    // One changed row, one new row, a moment later.
    let later = chrono::Utc::now().timestamp() + 5;
    fake.upsert_rows(
        "in.c-shop.orders",
        vec![row(&["2", "8", "refunded"]), row(&["4", "3", "paid"])],
        later,
    );
    ok(pipeline(&inst, &fake, &["run", "-q"]));
    assert!(
        fake.last_changed_since().is_some(),
        "the second sync asks for changes only"
    );
    assert_eq!(
        query(
            &inst,
            &fake,
            "select order_id, status from orders order by 1"
        ),
        "order_id,status\n1,paid\n2,refunded\n3,\"has \"\"quotes\"\", and a comma\"\n4,paid\n"
    );
}

#[test]
fn discover_writes_registry_entries_that_validate() {
    let fake = orders_fake();
    fake.add_table(
        "in.c-crm.orders",
        &["id", "note"],
        &[],
        "Orders as the CRM sees them",
    );
    let inst = instance(&fake, "{ mode: full }");
    std::fs::remove_file(inst.path().join("registry/kbc.yaml")).unwrap();
    let out = ok(pipeline(
        &inst,
        &fake,
        &["sources", "discover", "kbc", "--write", "registry/kbc.yaml"],
    ));
    assert!(out.contains("in.c-shop.orders"), "{out}");
    let written = std::fs::read_to_string(inst.path().join("registry/kbc.yaml")).unwrap();
    assert!(written.contains("primary_key: [order_id]"), "{written}");
    assert!(
        written.contains("description: One row per order"),
        "{written}"
    );
    // Two tables named `orders`: the second gets its bucket's name.
    assert!(
        written.contains("name: crm_orders") || written.contains("name: shop_orders"),
        "{written}"
    );
    ok(pipeline(&inst, &fake, &["validate", "-q"]));
    // Written in fmt's layout: nothing for `pipeline fmt` to change.
    let written = inst.path().join("registry/kbc.yaml");
    ok(pipeline(
        &inst,
        &fake,
        &["fmt", "--check", written.to_str().unwrap()],
    ));
}

/// The rows of `orders_fake`, as `query` prints them.
const ORDERS_CSV: &str =
    "order_id,amount,status\n1,10.5,paid\n2,7,paid\n3,1.25,\"has \"\"quotes\"\", and a comma\"\n";

/// `apply` with `env`, which must succeed and leave exactly `orders_fake`'s rows queryable; all
/// the command printed.
fn apply_orders(inst: &Instance, fake: &FakeKeboola, env: &[(&str, &str)]) -> String {
    let out = pipeline_env(inst, fake, &["apply", "--auto-approve"], env);
    let all = all_output(&out);
    assert!(out.status.success(), "{all}");
    assert_eq!(
        query(
            inst,
            fake,
            "select order_id, amount, status from orders order by 1"
        ),
        ORDERS_CSV
    );
    all
}

#[test]
fn an_aws_stack_export_is_read_from_s3_with_signed_requests() {
    let fake = orders_fake();
    fake.set_file_storage(Storage::S3 {
        region: "eu-central-1".into(),
    });
    let inst = instance(&fake, "{ mode: full, primary_key: [order_id] }");
    let endpoint = fake.url();
    let s3 = [("PIPELINE_KEBOOLA_S3_ENDPOINT", endpoint.as_str())];
    // Storage faults are retried as the API's are: a 503, then a body cut off halfway.
    fake.fail_next(Route::Slice, 1, 503);
    fake.truncate_next_slice();
    let all = apply_orders(&inst, &fake, &s3);
    // Three slices, each signed by the file detail's credentials for the bucket's region, with the
    // session token; the key (with a space and a `=`) URI-encoded in the path.
    let objects: Vec<_> = fake
        .file_storage_requests()
        .into_iter()
        .filter(|r| r.uri.starts_with("/kbc-fake-sapi-files/"))
        .collect();
    assert_eq!(objects.len(), 5, "3 slices, a 503 and a truncated body");
    for request in &objects {
        assert!(request.uri.contains("%20part%3D"), "{}", request.uri);
        let header = |name| request.header(name);
        let authorization = header("authorization").unwrap_or_default();
        assert!(
            authorization.starts_with(&format!(
                "AWS4-HMAC-SHA256 Credential={FAKE_AWS_ACCESS_KEY_ID}/"
            )) && authorization.contains("/eu-central-1/s3/aws4_request,"),
            "{authorization}"
        );
        assert_eq!(header("x-amz-security-token"), Some(FAKE_AWS_SESSION_TOKEN));
        assert_eq!(header("x-amz-content-sha256"), Some("UNSIGNED-PAYLOAD"));
    }
    assert_secrets_kept(
        &inst,
        &fake,
        &all,
        &[FAKE_AWS_SECRET_ACCESS_KEY, FAKE_AWS_SESSION_TOKEN],
    );
}

#[test]
fn a_gcp_stack_export_is_read_from_gcs_with_the_access_token() {
    let fake = orders_fake();
    fake.set_file_storage(Storage::Gcs);
    let inst = instance(&fake, "{ mode: full, primary_key: [order_id] }");
    let endpoint = fake.url();
    let gcs = [("PIPELINE_KEBOOLA_GCS_ENDPOINT", endpoint.as_str())];
    let all = apply_orders(&inst, &fake, &gcs);
    let objects: Vec<_> = fake
        .file_storage_requests()
        .into_iter()
        .filter(|r| r.uri.starts_with("/storage/v1/b/kbc-fake-gcs-files/o/"))
        .collect();
    assert_eq!(objects.len(), 3);
    for request in &objects {
        // The object name is one path segment: its slashes encoded.
        assert!(request.uri.contains("/o/exp-15%2F"), "{}", request.uri);
        assert!(request.uri.ends_with("?alt=media"), "{}", request.uri);
        let bearer = format!("Bearer {FAKE_GCS_ACCESS_TOKEN}");
        assert_eq!(request.header("authorization"), Some(bearer.as_str()));
    }
    assert_secrets_kept(&inst, &fake, &all, &[FAKE_GCS_ACCESS_TOKEN]);
}

#[test]
fn a_refused_s3_signature_is_reported_by_bucket_and_key_and_the_previous_data_stays() {
    let fake = orders_fake();
    fake.set_file_storage(Storage::S3 {
        region: "us-east-1".into(),
    });
    let inst = instance(&fake, "{ mode: full }");
    let endpoint = fake.url();
    let s3 = [("PIPELINE_KEBOOLA_S3_ENDPOINT", endpoint.as_str())];
    ok(pipeline_env(
        &inst,
        &fake,
        &["apply", "--auto-approve", "-q"],
        &s3,
    ));
    fake.set_rows(
        "in.c-shop.orders",
        vec![row(&["9", "1", "x"])],
        1_700_000_100,
    );
    fake.expect_aws_secret("not-the-secret-handed-out");
    let slices = fake.requests(Route::Slice);
    let out = pipeline_env(&inst, &fake, &["run"], &s3);
    assert_eq!(out.status.code(), Some(1));
    let all = all_output(&out);
    assert!(all.contains("SignatureDoesNotMatch"), "{all}");
    assert!(
        all.contains("s3://kbc-fake-sapi-files/exp-15/"),
        "the error names the object: {all}"
    );
    // A 403 is not retried; and S3's error body, which echoes the signed request, is not shown.
    assert_eq!(fake.requests(Route::Slice), slices + 1);
    assert_secrets_kept(
        &inst,
        &fake,
        &all,
        &[FAKE_AWS_SECRET_ACCESS_KEY, FAKE_AWS_SESSION_TOKEN],
    );
    assert_eq!(
        query(&inst, &fake, "select count(*) from orders"),
        "count_star()\n3\n"
    );
}

#[test]
fn a_slice_that_is_not_a_complete_gzip_stream_is_fetched_again() {
    let fake = orders_fake();
    let inst = instance(&fake, "{ mode: full, primary_key: [order_id] }");
    // Whole bodies with a matching Content-Length: only the gzip check can tell.
    fake.corrupt_next_slices(2, GzipFault::Truncated);
    fake.corrupt_next_slices(1, GzipFault::BadChecksum);
    let all = apply_orders(&inst, &fake, &[]);
    assert_eq!(fake.corrupt_slices_pending(), 0);
    assert_eq!(
        fake.requests(Route::Slice),
        3 + 3,
        "three slices, one of them fetched three more times"
    );
    assert!(all.contains("not a complete gzip stream"), "{all}");
}

#[test]
fn a_slice_that_stays_corrupt_fails_the_sync_and_nothing_is_merged() {
    let fake = orders_fake();
    let inst = instance(&fake, "{ mode: incremental, primary_key: [order_id] }");
    ok(pipeline(&inst, &fake, &["apply", "--auto-approve", "-q"]));
    let cursor = || {
        inst.state()
            .query_row("SELECT last_cursor FROM sync_state", [], |r| {
                r.get::<_, Option<String>>(0)
            })
            .unwrap()
    };
    let first_cursor = cursor();
    let later = chrono::Utc::now().timestamp() + 5;
    fake.upsert_rows(
        "in.c-shop.orders",
        vec![row(&["2", "8", "refunded"]), row(&["4", "3", "paid"])],
        later,
    );
    // Every attempt the client makes (6) gets a truncated stream.
    fake.corrupt_next_slices(6, GzipFault::Truncated);
    let out = pipeline(&inst, &fake, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    let err = all_output(&out);
    assert!(
        err.contains("incomplete or corrupt on all 6 attempts")
            && err.contains("not a complete gzip stream"),
        "{err}"
    );
    assert_eq!(fake.corrupt_slices_pending(), 0);
    // The previous data is published as it was, and the cursor has not moved: nothing of the
    // failed increment was merged, and the next sync asks for the same changes again.
    assert_eq!(
        query(&inst, &fake, "select count(*) from orders"),
        "count_star()\n3\n"
    );
    assert_eq!(
        query(&inst, &fake, "select status from orders where order_id = 2"),
        "status\npaid\n"
    );
    assert_eq!(cursor(), first_cursor);
    let scratch = inst.path().join("data/tmp");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "downloads left behind: {left:?}");
    ok(pipeline(&inst, &fake, &["run", "-q"]));
    assert_eq!(
        query(
            &inst,
            &fake,
            "select order_id, status from orders order by 1"
        ),
        "order_id,status\n1,paid\n2,refunded\n3,\"has \"\"quotes\"\", and a comma\"\n4,paid\n"
    );
}

/// `orders_fake`'s source with `project_id: <id>` in its connection.
fn with_project_id(inst: &Instance, fake: &FakeKeboola, id: u64) {
    inst.write(
        "pipelines/kbc.yaml",
        &format!(
            "type: keboola\nconnection:\n  url: {}\n  token_env: PIPELINE_TEST_KBC_TOKEN\n  project_id: {id}\n",
            fake.url()
        ),
    );
}

#[test]
fn a_token_of_another_project_than_project_id_is_refused_before_any_export() {
    let fake = orders_fake();
    let inst = instance(&fake, "{ mode: full }");
    with_project_id(&inst, &fake, 999);
    let out = pipeline(&inst, &fake, &["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let all = all_output(&out);
    assert!(
        all.contains(&format!(
            "the token in `PIPELINE_TEST_KBC_TOKEN` belongs to Keboola project {FAKE_PROJECT_ID}, \
             but the connection's project_id is 999"
        )),
        "{all}"
    );
    assert!(!all.contains(fake.token()), "{all}");
    assert_eq!(fake.requests(Route::Export), 0, "nothing is exported");
    assert_eq!(fake.requests(Route::Detail), 0, "nothing is read");
    // Discovery checks it too: it would write another project's tables into the registry.
    let out = pipeline(&inst, &fake, &["sources", "discover", "kbc"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(all_output(&out).contains("project_id is 999"));
    assert_eq!(fake.requests(Route::Tables), 0);

    // The right project: synced, with the token verified once for the whole run.
    with_project_id(&inst, &fake, FAKE_PROJECT_ID);
    let verified = fake.requests(Route::Verify);
    apply_orders(&inst, &fake, &[]);
    assert_eq!(fake.requests(Route::Verify), verified + 1);
}

#[test]
fn where_filters_the_export_can_express_are_sent_with_it() {
    let fake = orders_fake();
    fake.set_column_base_type("in.c-shop.orders", "order_id", "INTEGER");
    fake.set_column_base_type("in.c-shop.orders", "amount", "NUMERIC");
    fake.set_column_base_type("in.c-shop.orders", "status", "STRING");
    fake.set_rows(
        "in.c-shop.orders",
        vec![
            row(&["1", "10.5", "paid"]),
            row(&["2", "7", "paid"]),
            row(&["3", "1.25", "has \"quotes\""]),
            row(&["4", "30", "test"]),
            row(&["5", "12", ""]),
            row(&["6", "8", "refunded"]),
        ],
        1_700_000_000,
    );
    let inst = instance(&fake, "{ mode: incremental, primary_key: [order_id] }");
    // Text equality goes to the export; a numeric comparison is applied after the download.
    inst.write(
        "registry/kbc.yaml",
        "tables:\n  - source: kbc\n    bucket: in.c-shop\n    source_table: orders\n    \
         sync: { mode: incremental, primary_key: [order_id] }\n    where:\n      \
         - { column: status, operator: ne, values: [test] }\n      \
         - { column: status, operator: in, values: [paid, refunded] }\n      \
         - { column: amount, operator: gt, values: [7.5] }\n",
    );
    ok(pipeline(&inst, &fake, &["apply", "--auto-approve", "-q"]));
    let filter = |operator: &str, values: &[&str]| WhereFilter {
        column: "status".into(),
        operator: operator.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    };
    let exports = fake.export_requests();
    assert_eq!(exports.len(), 1);
    assert_eq!(
        exports[0].where_filters,
        [filter("ne", &["test"]), filter("eq", &["paid", "refunded"])]
    );
    assert_eq!(
        query(
            &inst,
            &fake,
            "select order_id, amount, status from orders order by 1"
        ),
        "order_id,amount,status\n1,10.5,paid\n6,8.0,refunded\n"
    );

    // An increment carries no filter to the source: a row that changed so that it no longer
    // matches must still arrive, to replace its old version. The filters still apply to it.
    let later = chrono::Utc::now().timestamp() + 5;
    fake.upsert_rows(
        "in.c-shop.orders",
        vec![row(&["7", "9", "paid"]), row(&["8", "50", "test"])],
        later,
    );
    ok(pipeline(&inst, &fake, &["run", "-q"]));
    let exports = fake.export_requests();
    assert_eq!(exports.len(), 2);
    assert!(exports[1].changed_since.is_some());
    assert_eq!(exports[1].where_filters, []);
    assert_eq!(
        query(&inst, &fake, "select order_id from orders order by 1"),
        "order_id\n1\n6\n7\n"
    );
}

/// Every credential the fake hands out, and the Storage token.
fn all_fake_secrets(fake: &FakeKeboola) -> Vec<&str> {
    vec![
        fake.token(),
        FAKE_AWS_SECRET_ACCESS_KEY,
        FAKE_AWS_SESSION_TOKEN,
        FAKE_GCS_ACCESS_TOKEN,
        FAKE_PRESIGNED_SIGNATURE,
        FAKE_PRESIGNED_SECURITY_TOKEN,
    ]
}

#[test]
fn no_log_level_shows_a_credential_on_any_stack() {
    for (storage, endpoint_env, log_format) in [
        (Storage::Http, None, "text"),
        (
            Storage::S3 {
                region: "eu-west-1".into(),
            },
            Some("PIPELINE_KEBOOLA_S3_ENDPOINT"),
            "text",
        ),
        (
            Storage::S3 {
                region: "eu-west-1".into(),
            },
            Some("PIPELINE_KEBOOLA_S3_ENDPOINT"),
            "json",
        ),
        (Storage::Gcs, Some("PIPELINE_KEBOOLA_GCS_ENDPOINT"), "json"),
    ] {
        let fake = orders_fake();
        fake.set_file_storage(storage.clone());
        let inst = instance(&fake, "{ mode: full, primary_key: [order_id] }");
        with_project_id(&inst, &fake, FAKE_PROJECT_ID);
        // Retried faults, so that warnings and their errors are printed too.
        fake.fail_next(Route::Manifest, 1, 503);
        fake.corrupt_next_slices(1, GzipFault::Truncated);
        let mut cmd = inst.cmd();
        cmd.args(["apply", "--auto-approve", "--log-format", log_format])
            .env("PIPELINE_TEST_KBC_TOKEN", fake.token())
            .env("PIPELINE_KEBOOLA_FAST_RETRY", "1");
        if let Some(name) = endpoint_env {
            cmd.env(name, fake.url());
        }
        let out = secrets::assert_no_secret_in_logs(&inst, cmd, &all_fake_secrets(&fake));
        let all = all_output(&out);
        assert!(out.status.success(), "{storage:?}: {all}");
        // The HTTP client's request lines were printed, with the credentials masked (not left
        // out): the redaction is what kept them out.
        assert!(
            all.contains("X-StorageApi-Token: <redacted>"),
            "{storage:?}: {all}"
        );
        assert!(
            all.contains("X-Amz-Signature=<redacted>"),
            "{storage:?}: {all}"
        );
        assert_eq!(
            query(&inst, &fake, "select count(*) from orders"),
            "count_star()\n3\n"
        );
    }
}

#[test]
fn errors_never_show_a_credential() {
    // A refused S3 signature (its body echoes the signed request) and a slice that stays
    // corrupt: both end the sync with an error, printed and recorded in the state.
    let fake = orders_fake();
    fake.set_file_storage(Storage::S3 {
        region: "us-east-1".into(),
    });
    let inst = instance(&fake, "{ mode: full }");
    let endpoint = fake.url();
    fake.expect_aws_secret("not-the-secret-handed-out");
    let mut cmd = inst.cmd();
    cmd.args(["apply", "--auto-approve"])
        .env("PIPELINE_TEST_KBC_TOKEN", fake.token())
        .env("PIPELINE_KEBOOLA_FAST_RETRY", "1")
        .env("PIPELINE_KEBOOLA_S3_ENDPOINT", &endpoint);
    let out = secrets::assert_no_secret_in_logs(&inst, cmd, &all_fake_secrets(&fake));
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    assert!(all_output(&out).contains("SignatureDoesNotMatch"));

    fake.expect_aws_secret(FAKE_AWS_SECRET_ACCESS_KEY);
    fake.corrupt_next_slices(6, GzipFault::BadChecksum);
    let mut cmd = inst.cmd();
    cmd.args(["run"])
        .env("PIPELINE_TEST_KBC_TOKEN", fake.token())
        .env("PIPELINE_KEBOOLA_FAST_RETRY", "1")
        .env("PIPELINE_KEBOOLA_S3_ENDPOINT", &endpoint);
    let out = secrets::assert_no_secret_in_logs(&inst, cmd, &all_fake_secrets(&fake));
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    assert!(all_output(&out).contains("not a complete gzip stream"));
}

#[test]
fn verbose_flags_raise_only_pipelines_own_log_lines() {
    let fake = orders_fake();
    let inst = instance(&fake, "{ mode: full }");
    let all = apply_orders(&inst, &fake, &[]);
    assert!(!all.contains("DEBUG"), "{all}");
    let inst = instance(&fake, "{ mode: full }");
    let out = pipeline(&inst, &fake, &["apply", "--auto-approve", "-vv"]);
    let all = all_output(&out);
    assert!(out.status.success(), "{all}");
    // Our own debug lines, not the HTTP client's (which would print every request's headers).
    assert!(all.contains("extract: written"), "{all}");
    assert!(!all.contains("writing prelude"), "{all}");
    assert!(!all.contains(fake.token()), "{all}");
}
