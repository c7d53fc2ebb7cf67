//! The keboola connector end to end, against a fake Keboola Storage API on 127.0.0.1 (its wire
//! format follows the documented one; see tests/support/fake_keboola.rs).

#[path = "../support/fake_keboola.rs"]
#[allow(dead_code)]
mod fake_keboola;

use crate::common::Instance;
use fake_keboola::{
    FakeKeboola, Route, Storage, FAKE_AWS_ACCESS_KEY_ID, FAKE_AWS_SECRET_ACCESS_KEY,
    FAKE_AWS_SESSION_TOKEN, FAKE_GCS_ACCESS_TOKEN,
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
