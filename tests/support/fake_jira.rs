//! A fake Jira Cloud site, for end-to-end tests and benchmarks of the Jira connector.
//!
//! It serves, over plain HTTP on 127.0.0.1, the REST API v3 subset the connector reads, in the
//! documented shapes (docs/jira.md lists the facts relied on):
//! - `GET /rest/api/3/field`: system fields and custom fields (Sprint, Story point estimate, Team,
//!   Severity) with their `schema`.
//! - `GET /rest/api/3/issue/{idOrKey}?expand=renderedFields,changelog&fields=*all`: the issue, with
//!   `fields.comment` holding at most [`FakeJira::set_embedded_limits`]'s comments and `changelog`
//!   the most recent histories (newest first), each with its `total`, as Jira truncates them. An
//!   old key of a moved issue still finds it; a deleted or unknown issue is a 404.
//! - `GET /rest/api/3/issue/{idOrKey}/changelog` (`startAt`/`maxResults` ≤ 100, oldest first,
//!   `isLast`), `…/comment` (`startAt`/`maxResults`), `…/remotelink`.
//! - `GET /rest/api/3/search/jql` with `jql`, `fields`, `maxResults` (capped at 100) and
//!   `nextPageToken`; the last page has `isLast: true` and no token. The JQL understood is a small
//!   subset: `project IS NOT EMPTY`, `project = X`, `project in (X, Y)`, `key = X`,
//!   `created|updated >=|<= "YYYY-MM-DD"`, joined by AND/OR, an `ORDER BY` ignored; anything else
//!   is a 400 with Jira's error shape.
//!
//! Every request needs basic auth with the fake's e-mail and API token ([`FakeJira::email`],
//! [`FakeJira::token`]); others get a 401. Faults per route: [`FakeJira::fail_next`] (a status),
//! [`FakeJira::rate_limit_next`] (429 with `Retry-After`), [`FakeJira::delay_next`] (slow answers).
//!
//! Tests change the site through blocking methods (create, update, transition, comment, attach,
//! link, remote link, move, delete); each change bumps `updated`, records changelog items as Jira
//! does (attachments and links appear in the history too) and emits the webhook Jira would send:
//! its JSON body, signed with `X-Hub-Signature: sha256=<HMAC-SHA256 of the body>` by the webhook
//! secret (computed here independently of the connector's code), is recorded
//! ([`FakeJira::deliveries`]) and, when a target is set ([`FakeJira::send_webhooks_to`]), POSTed
//! there. `/fake/webhook-sink` is a target on the fake itself that records what it receives.
//!
//! Where it differs from Jira on purpose: one fixed user; timestamps come from a fake clock that
//! advances a second per change; attachment events carry the attachment only (as Jira's do), with
//! the issue's `jira:issue_updated` (its "Attachment" history item) sent alongside.
//!
//! Included like fake_keboola: `#[path = "../support/fake_jira.rs"] #[allow(dead_code)] mod fake_jira;`.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::TcpListener as StdTcpListener;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const FAKE_EMAIL: &str = "robot@fake-jira.example";
pub const FAKE_WEBHOOK_SECRET: &str = "fake-jira-webhook-secret-7f3a";

/// A group of endpoints, for fault injection and request counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    Fields,
    Issue,
    Changelog,
    Comments,
    RemoteLinks,
    Search,
    /// Every request.
    Any,
}

/// A webhook the fake emitted.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub body: Vec<u8>,
    /// `X-Hub-Signature`
    pub signature: String,
    /// `X-Atlassian-Webhook-Identifier`
    pub identifier: String,
    /// The HTTP status the target answered, when it was sent.
    pub status: Option<u16>,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("deliveries are JSON")
    }
}

pub struct FakeJira {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Shared {
    base: String,
    token: String,
    state: Mutex<FakeState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Issue {
    id: u64,
    key: String,
    project: String,
    summary: String,
    description: Value,
    status: (String, String), // name, category key
    issue_type: String,
    created: i64,
    updated: i64,
    resolved: Option<i64>,
    labels: Vec<String>,
    parent: Option<String>,
    sprint: Option<String>,
    story_points: Option<f64>,
    team: Option<String>,
    comments: Vec<Comment>,
    histories: Vec<Value>,
    attachments: Vec<Value>,
    remote_links: Vec<Value>,
}

struct Comment {
    id: u64,
    body: Value,
    created: i64,
    updated: i64,
}

struct Link {
    kind: String,
    outward: u64,
    inward: u64,
}

struct FakeState {
    issues: BTreeMap<u64, Issue>,
    keys: HashMap<String, u64>,
    /// Keys an issue had before it moved project.
    old_keys: HashMap<String, u64>,
    links: BTreeMap<u64, Link>,
    project_counters: HashMap<String, u64>,
    next_id: u64,
    clock_ms: i64,
    comment_limit: usize,
    changelog_limit: usize,
    faults: Vec<Fault>,
    counts: HashMap<Route, usize>,
    deliveries: Vec<Delivery>,
    target: Option<String>,
    sink: Vec<(HeaderMap, Bytes)>,
}

struct Fault {
    route: Route,
    kind: FaultKind,
    remaining: usize,
}

#[derive(Clone)]
enum FaultKind {
    Fail(StatusCode),
    RateLimit(u64),
    Delay(Duration),
}

/// The fake clock's start: 2024-06-01T00:00:00Z.
const CLOCK_START_MS: i64 = 1_717_200_000_000;

fn jira_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("valid time")
        .format("%Y-%m-%dT%H:%M:%S%.3f+0000")
        .to_string()
}

fn parse_time(s: &str) -> i64 {
    chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3f%z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(s))
        .unwrap_or_else(|e| panic!("bad time {s}: {e}"))
        .timestamp_millis()
}

fn user() -> Value {
    json!({"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "Robot Tester", "active": true})
}

/// A realistic description: a paragraph with a link mark, an inline card and a bullet list.
pub fn description_adf(key: &str) -> Value {
    json!({"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [
            {"type": "text", "text": format!("Work on {key}, see ")},
            {"type": "text", "text": "the runbook", "marks": [{"type": "link", "attrs": {"href": "https://wiki.example.com/runbook"}}]},
            {"type": "text", "text": " and "},
            {"type": "inlineCard", "attrs": {"url": format!("https://github.com/acme/app/issues/{key}")}}
        ]},
        {"type": "bulletList", "content": [
            {"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "first step"}]}]}
        ]}
    ]})
}

/// A one-paragraph ADF body.
pub fn text_adf(text: &str) -> Value {
    json!({"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}]})
}

impl FakeJira {
    /// Starts the fake on an ephemeral port of 127.0.0.1.
    pub fn start() -> FakeJira {
        Self::start_on_port(0).expect("start the fake Jira on 127.0.0.1")
    }

    pub fn start_on_port(port: u16) -> io::Result<FakeJira> {
        let listener = StdTcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let base = format!("http://{}", listener.local_addr()?);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let shared = Arc::new(Shared {
            base,
            token: format!("ATATTfake{nanos:x}{:x}", std::process::id()),
            state: Mutex::new(FakeState {
                issues: BTreeMap::new(),
                keys: HashMap::new(),
                old_keys: HashMap::new(),
                links: BTreeMap::new(),
                project_counters: HashMap::new(),
                next_id: 10_000,
                clock_ms: CLOCK_START_MS,
                comment_limit: 20,
                changelog_limit: 100,
                faults: Vec::new(),
                counts: HashMap::new(),
                deliveries: Vec::new(),
                target: None,
                sink: Vec::new(),
            }),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-jira")
            .enable_all()
            .build()?;
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let app = router(Arc::clone(&shared));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Ok(FakeJira {
            shared,
            runtime: Some(runtime),
        })
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    pub fn email(&self) -> &str {
        FAKE_EMAIL
    }

    /// The only API token the fake accepts.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    pub fn webhook_secret(&self) -> &str {
        FAKE_WEBHOOK_SECRET
    }

    /// How many comments `fields.comment` and histories `changelog` carry in an issue's own JSON
    /// (the rest needs the paginated endpoints). Defaults: 20 and 100.
    pub fn set_embedded_limits(&self, comments: usize, histories: usize) {
        let mut s = self.shared.lock();
        s.comment_limit = comments;
        s.changelog_limit = histories;
    }

    pub fn fail_next(&self, route: Route, times: usize, status: u16) {
        self.add_fault(
            route,
            times,
            FaultKind::Fail(StatusCode::from_u16(status).expect("a status")),
        );
    }

    pub fn rate_limit_next(&self, route: Route, times: usize, retry_after_secs: u64) {
        self.add_fault(route, times, FaultKind::RateLimit(retry_after_secs));
    }

    pub fn delay_next(&self, route: Route, times: usize, delay: Duration) {
        self.add_fault(route, times, FaultKind::Delay(delay));
    }

    fn add_fault(&self, route: Route, times: usize, kind: FaultKind) {
        if times > 0 {
            self.shared.lock().faults.push(Fault {
                route,
                kind,
                remaining: times,
            });
        }
    }

    /// Requests received on `route` so far.
    pub fn requests(&self, route: Route) -> usize {
        self.shared.lock().counts.get(&route).copied().unwrap_or(0)
    }

    /// Every webhook emitted so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().deliveries.clone()
    }

    /// POST every later webhook to `url` (`None`: only record them).
    pub fn send_webhooks_to(&self, url: Option<&str>) {
        self.shared.lock().target = url.map(str::to_string);
    }

    /// The fake's own webhook target, which records what it receives ([`Self::sink`]).
    pub fn sink_url(&self) -> String {
        format!("{}/fake/webhook-sink", self.shared.base)
    }

    /// What `/fake/webhook-sink` received: headers and raw body.
    pub fn sink(&self) -> Vec<(HeaderMap, Bytes)> {
        self.shared.lock().sink.clone()
    }

    /// `sha256=<hex HMAC-SHA256 of body keyed by the webhook secret>`.
    pub fn sign(&self, body: &[u8]) -> String {
        format!(
            "sha256={}",
            hex(&hmac_sha256(FAKE_WEBHOOK_SECRET.as_bytes(), body))
        )
    }

    /// Keys of the live issues, sorted by id.
    pub fn keys(&self) -> Vec<String> {
        self.shared
            .lock()
            .issues
            .values()
            .map(|i| i.key.clone())
            .collect()
    }

    /// The remote links of an issue, as `GET …/remotelink` returns them.
    pub fn remote_links(&self, key: &str) -> Vec<Value> {
        let s = self.shared.lock();
        s.find(key)
            .map(|id| s.issues[&id].remote_links.clone())
            .unwrap_or_default()
    }

    /// An issue's JSON as `GET /rest/api/3/issue/{key}` returns it (`None` when gone).
    pub fn issue_json(&self, key: &str) -> Option<Value> {
        let s = self.shared.lock();
        let id = s.find(key)?;
        Some(s.render_issue(id, &self.shared.base))
    }

    /// Creates an issue created at `created` (Jira's `2024-01-05T10:00:00.000+0000` or RFC 3339);
    /// returns its key.
    pub fn create_issue(&self, project: &str, summary: &str, created: &str) -> String {
        let created = parse_time(created);
        let mut s = self.shared.lock();
        let id = s.next_id;
        s.next_id += 1;
        let n = {
            let c = s.project_counters.entry(project.to_string()).or_insert(0);
            *c += 1;
            *c
        };
        let key = format!("{project}-{n}");
        let issue = Issue {
            id,
            key: key.clone(),
            project: project.to_string(),
            summary: summary.to_string(),
            description: description_adf(&key),
            status: ("To Do".into(), "new".into()),
            issue_type: "Task".into(),
            created,
            updated: created,
            resolved: None,
            labels: vec!["backend".into()],
            parent: None,
            sprint: None,
            story_points: None,
            team: None,
            comments: Vec::new(),
            histories: Vec::new(),
            attachments: Vec::new(),
            remote_links: Vec::new(),
        };
        s.keys.insert(key.clone(), id);
        s.issues.insert(id, issue);
        let body = json!({"webhookEvent": "jira:issue_created", "issue_event_type_name": "issue_created",
            "user": user(), "issue": s.issue_ref(id, &self.shared.base)});
        self.emit(s, body);
        key
    }

    /// Sets the summary (a history item), like an edit in Jira.
    pub fn update_summary(&self, key: &str, summary: &str) {
        self.change(key, |i, _| {
            let from = std::mem::replace(&mut i.summary, summary.to_string());
            vec![item(
                "summary",
                "summary",
                None,
                Some(&from),
                None,
                Some(summary),
            )]
        });
    }

    /// Sets the description (ADF).
    pub fn set_description(&self, key: &str, adf: Value) {
        self.change(key, |i, _| {
            i.description = adf;
            vec![item("description", "description", None, None, None, None)]
        });
    }

    /// Moves the issue to `status` with status category `category` (`new`, `indeterminate`,
    /// `done`); `done` resolves it.
    pub fn transition(&self, key: &str, status: &str, category: &str) {
        self.change(key, |i, now| {
            let from = std::mem::replace(&mut i.status, (status.to_string(), category.to_string()));
            i.resolved = (category == "done").then_some(now);
            vec![item(
                "status",
                "status",
                Some("1"),
                Some(&from.0),
                Some("3"),
                Some(status),
            )]
        });
    }

    /// Sets the agile fields (sprint name, story points), the Team option and labels.
    pub fn set_agile(
        &self,
        key: &str,
        sprint: Option<&str>,
        points: Option<f64>,
        team: Option<&str>,
    ) {
        self.change(key, |i, _| {
            i.sprint = sprint.map(str::to_string);
            i.story_points = points;
            i.team = team.map(str::to_string);
            vec![item("Sprint", "custom", None, None, None, sprint)]
        });
    }

    pub fn set_parent(&self, key: &str, parent: Option<&str>) {
        self.change(key, |i, _| {
            i.parent = parent.map(str::to_string);
            vec![item("Parent", "jira", None, None, None, parent)]
        });
    }

    /// Adds a comment; returns its id.
    pub fn add_comment(&self, key: &str, body: Value) -> String {
        let mut s = self.shared.lock();
        let id = s.find(key).unwrap_or_else(|| panic!("no issue {key}"));
        let now = s.tick();
        let comment_id = s.next_id;
        s.next_id += 1;
        let i = s.issues.get_mut(&id).expect("found");
        i.comments.push(Comment {
            id: comment_id,
            body,
            created: now,
            updated: now,
        });
        i.updated = now;
        let c = s.render_comment(id, comment_id);
        let body = json!({"webhookEvent": "comment_created", "comment": c, "issue": s.issue_ref(id, &self.shared.base)});
        self.emit(s, body);
        comment_id.to_string()
    }

    pub fn edit_comment(&self, key: &str, comment_id: &str, body: Value) {
        let mut s = self.shared.lock();
        let id = s.find(key).unwrap_or_else(|| panic!("no issue {key}"));
        let now = s.tick();
        let cid: u64 = comment_id.parse().expect("a comment id");
        let i = s.issues.get_mut(&id).expect("found");
        let c = i
            .comments
            .iter_mut()
            .find(|c| c.id == cid)
            .expect("the comment");
        c.body = body;
        c.updated = now;
        i.updated = now;
        let c = s.render_comment(id, cid);
        let body = json!({"webhookEvent": "comment_updated", "comment": c, "issue": s.issue_ref(id, &self.shared.base)});
        self.emit(s, body);
    }

    pub fn delete_comment(&self, key: &str, comment_id: &str) {
        let mut s = self.shared.lock();
        let id = s.find(key).unwrap_or_else(|| panic!("no issue {key}"));
        let now = s.tick();
        let cid: u64 = comment_id.parse().expect("a comment id");
        let c = s.render_comment(id, cid);
        let i = s.issues.get_mut(&id).expect("found");
        i.comments.retain(|c| c.id != cid);
        i.updated = now;
        let body = json!({"webhookEvent": "comment_deleted", "comment": c, "issue": s.issue_ref(id, &self.shared.base)});
        self.emit(s, body);
    }

    /// Adds an attachment (metadata only); returns its id.
    pub fn add_attachment(&self, key: &str, filename: &str, size: u64) -> String {
        let mut s = self.shared.lock();
        let id = s.find(key).unwrap_or_else(|| panic!("no issue {key}"));
        let now = s.tick();
        let aid = s.next_id;
        s.next_id += 1;
        let attachment = json!({"self": format!("{}/rest/api/3/attachment/{aid}", self.shared.base), "id": aid.to_string(),
            "filename": filename, "author": user(), "created": jira_time(now), "size": size,
            "mimeType": "application/octet-stream",
            "content": format!("{}/rest/api/3/attachment/content/{aid}", self.shared.base)});
        let i = s.issues.get_mut(&id).expect("found");
        i.attachments.push(attachment.clone());
        s.record_history(
            id,
            vec![item(
                "Attachment",
                "jira",
                None,
                None,
                Some(&aid.to_string()),
                Some(filename),
            )],
        );
        let updated = json!({"webhookEvent": "jira:issue_updated", "issue_event_type_name": "issue_updated",
            "issue": s.issue_ref(id, &self.shared.base), "changelog": s.last_history(id)});
        let event = json!({"webhookEvent": "attachment_created", "attachment": attachment});
        self.emit_all(s, vec![event, updated]);
        aid.to_string()
    }

    pub fn delete_attachment(&self, key: &str, attachment_id: &str) {
        let mut s = self.shared.lock();
        let id = s.find(key).unwrap_or_else(|| panic!("no issue {key}"));
        s.tick();
        let i = s.issues.get_mut(&id).expect("found");
        let pos = i
            .attachments
            .iter()
            .position(|a| a["id"] == attachment_id)
            .expect("the attachment");
        let a = i.attachments.remove(pos);
        let name = a["filename"].as_str().unwrap_or_default().to_string();
        s.record_history(
            id,
            vec![item(
                "Attachment",
                "jira",
                Some(attachment_id),
                Some(&name),
                None,
                None,
            )],
        );
        let updated = json!({"webhookEvent": "jira:issue_updated", "issue_event_type_name": "issue_updated",
            "issue": s.issue_ref(id, &self.shared.base), "changelog": s.last_history(id)});
        let event = json!({"webhookEvent": "attachment_deleted", "attachment": a});
        self.emit_all(s, vec![event, updated]);
    }

    /// Links `outward` → `inward` with a link type (`Blocks`, `Relates`…); returns the link id.
    pub fn link(&self, outward: &str, inward: &str, kind: &str) -> String {
        let mut s = self.shared.lock();
        let from = s
            .find(outward)
            .unwrap_or_else(|| panic!("no issue {outward}"));
        let to = s
            .find(inward)
            .unwrap_or_else(|| panic!("no issue {inward}"));
        s.tick();
        let lid = s.next_id;
        s.next_id += 1;
        s.links.insert(
            lid,
            Link {
                kind: kind.to_string(),
                outward: from,
                inward: to,
            },
        );
        let (o, i) = verbs(kind);
        let (to_key, from_key) = (s.issues[&to].key.clone(), s.issues[&from].key.clone());
        s.record_history(
            from,
            vec![item(
                "Link",
                "jira",
                None,
                None,
                Some(&to_key),
                Some(&format!("This issue {o} {to_key}")),
            )],
        );
        s.record_history(
            to,
            vec![item(
                "Link",
                "jira",
                None,
                None,
                Some(&from_key),
                Some(&format!("This issue {i} {from_key}")),
            )],
        );
        let event =
            json!({"webhookEvent": "issuelink_created", "issueLink": s.render_link_event(lid)});
        self.emit(s, event);
        lid.to_string()
    }

    pub fn unlink(&self, link_id: &str) {
        let mut s = self.shared.lock();
        let lid: u64 = link_id.parse().expect("a link id");
        s.tick();
        let event =
            json!({"webhookEvent": "issuelink_deleted", "issueLink": s.render_link_event(lid)});
        let l = s.links.remove(&lid).expect("the link");
        for side in [l.outward, l.inward] {
            s.record_history(
                side,
                vec![item(
                    "Link",
                    "jira",
                    Some(link_id),
                    Some("removed"),
                    None,
                    None,
                )],
            );
        }
        self.emit(s, event);
    }

    /// Adds a remote link (no webhook: Jira sends none for remote links); returns its id.
    pub fn add_remote_link(&self, key: &str, url: &str, title: &str) -> String {
        let mut s = self.shared.lock();
        let id = s.find(key).unwrap_or_else(|| panic!("no issue {key}"));
        s.tick();
        let rid = s.next_id;
        s.next_id += 1;
        let link = json!({"id": rid, "self": format!("{}/rest/api/3/issue/{key}/remotelink/{rid}", self.shared.base),
            "globalId": format!("system={url}"), "application": {"type": "com.github", "name": "GitHub"},
            "relationship": "mentioned in",
            "object": {"url": url, "title": title, "summary": "", "status": {"resolved": false, "icon": {}}}});
        s.issues
            .get_mut(&id)
            .expect("found")
            .remote_links
            .push(link);
        rid.to_string()
    }

    /// Moves the issue to another project: it gets a new key; the old one still finds it.
    pub fn move_issue(&self, key: &str, project: &str) -> String {
        let mut s = self.shared.lock();
        let id = s.find(key).unwrap_or_else(|| panic!("no issue {key}"));
        s.tick();
        let n = {
            let c = s.project_counters.entry(project.to_string()).or_insert(0);
            *c += 1;
            *c
        };
        let new_key = format!("{project}-{n}");
        s.keys.remove(key);
        s.old_keys.insert(key.to_string(), id);
        s.keys.insert(new_key.clone(), id);
        {
            let i = s.issues.get_mut(&id).expect("found");
            i.key = new_key.clone();
            i.project = project.to_string();
        }
        s.record_history(
            id,
            vec![item("Key", "jira", None, Some(key), None, Some(&new_key))],
        );
        let body = json!({"webhookEvent": "jira:issue_updated", "issue_event_type_name": "issue_moved",
            "issue": s.issue_ref(id, &self.shared.base), "changelog": s.last_history(id)});
        self.emit(s, body);
        new_key
    }

    pub fn delete_issue(&self, key: &str) {
        let mut s = self.shared.lock();
        let id = s.find(key).unwrap_or_else(|| panic!("no issue {key}"));
        s.tick();
        let body = json!({"webhookEvent": "jira:issue_deleted", "issue_event_type_name": "issue_deleted",
            "user": user(), "issue": s.issue_ref(id, &self.shared.base)});
        let issue = s.issues.remove(&id).expect("found");
        s.keys.remove(&issue.key);
        s.old_keys.retain(|_, v| *v != id);
        s.links.retain(|_, l| l.outward != id && l.inward != id);
        self.emit(s, body);
    }

    /// Creates `n` issues in `projects` (round robin), created over `months` consecutive months
    /// from January 2023, each with a few comments, changelog items, an attachment, a remote
    /// link, and a link to the previous issue; records no webhooks (a site that existed before).
    /// Returns the keys.
    pub fn populate(&self, n: usize, projects: &[&str], months: usize) -> Vec<String> {
        let target = self.shared.lock().target.take();
        let before = self.shared.lock().deliveries.len();
        let mut keys: Vec<String> = Vec::with_capacity(n);
        for k in 0..n {
            let project = projects[k % projects.len()];
            let month = k % months.max(1);
            let (year, m) = (2023 + (month / 12) as i32, (month % 12) as u32 + 1);
            let day = 1 + (k / months.max(1)) % 27;
            let created = format!(
                "{year}-{m:02}-{day:02}T{:02}:{:02}:00.000+0000",
                k % 24,
                k % 60
            );
            let key = self.create_issue(project, &format!("Generated issue {k}"), &created);
            if k % 3 == 0 {
                self.transition(&key, "In Progress", "indeterminate");
            }
            if k % 5 == 0 {
                self.set_agile(
                    &key,
                    Some("Sprint 7"),
                    Some((k % 8) as f64),
                    Some("Platform"),
                );
            }
            for c in 0..(k % 4) {
                self.add_comment(&key, text_adf(&format!("comment {c} on {key}")));
            }
            if k % 2 == 0 {
                self.add_attachment(&key, &format!("log-{k}.txt"), 100 + k as u64);
            }
            if k % 7 == 0 {
                self.add_remote_link(
                    &key,
                    &format!("https://github.com/acme/app/pull/{k}"),
                    &format!("PR {k}"),
                );
            }
            if let Some(prev) = keys.last() {
                if k % 4 == 1 {
                    self.link(&key, prev, "Blocks");
                }
            }
            keys.push(key);
        }
        let mut s = self.shared.lock();
        s.deliveries.truncate(before);
        s.target = target;
        keys
    }

    /// Records (and sends, when a target is set) the webhook for `body`.
    fn emit(&self, s: MutexGuard<'_, FakeState>, body: Value) {
        self.emit_all(s, vec![body]);
    }

    fn emit_all(&self, mut s: MutexGuard<'_, FakeState>, bodies: Vec<Value>) {
        let now = s.clock_ms;
        let mut pending = Vec::new();
        for mut body in bodies {
            body["timestamp"] = json!(now);
            let bytes = serde_json::to_vec(&body).expect("JSON");
            let identifier = format!("fake-{}-{}", now, s.deliveries.len());
            let signature = format!(
                "sha256={}",
                hex(&hmac_sha256(FAKE_WEBHOOK_SECRET.as_bytes(), &bytes))
            );
            s.deliveries.push(Delivery {
                body: bytes,
                signature,
                identifier,
                status: None,
            });
            pending.push(s.deliveries.len() - 1);
        }
        let target = s.target.clone();
        let to_send: Vec<Delivery> = pending.iter().map(|&i| s.deliveries[i].clone()).collect();
        drop(s);
        let Some(target) = target else { return };
        // Sent from the caller's thread, after the state lock is released (the target may be the
        // fake itself, or a daemon that calls back into the fake).
        for (i, d) in pending.into_iter().zip(to_send) {
            let status = match ureq::post(&target)
                .set("Content-Type", "application/json")
                .set("X-Hub-Signature", &d.signature)
                .set("X-Atlassian-Webhook-Identifier", &d.identifier)
                .set("User-Agent", "Atlassian Webhook HTTP Client")
                .send_bytes(&d.body)
            {
                Ok(r) => r.status(),
                Err(ureq::Error::Status(code, _)) => code,
                Err(_) => 0,
            };
            if let Some(d) = self.shared.lock().deliveries.get_mut(i) {
                d.status = Some(status);
            }
        }
    }

    /// Applies `edit` to the issue and records its history items; emits `jira:issue_updated`.
    fn change(&self, key: &str, edit: impl FnOnce(&mut Issue, i64) -> Vec<Value>) {
        let mut s = self.shared.lock();
        let id = s.find(key).unwrap_or_else(|| panic!("no issue {key}"));
        let now = s.tick();
        let items = edit(s.issues.get_mut(&id).expect("found"), now);
        s.record_history(id, items);
        let body = json!({"webhookEvent": "jira:issue_updated", "issue_event_type_name": "issue_generic",
            "user": user(), "issue": s.issue_ref(id, &self.shared.base), "changelog": s.last_history(id)});
        self.emit(s, body);
    }
}

impl Drop for FakeJira {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn verbs(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "Blocks" => ("blocks", "is blocked by"),
        "Duplicate" => ("duplicates", "is duplicated by"),
        "Cloners" => ("clones", "is cloned by"),
        _ => ("relates to", "relates to"),
    }
}

fn item(
    field: &str,
    fieldtype: &str,
    from: Option<&str>,
    from_s: Option<&str>,
    to: Option<&str>,
    to_s: Option<&str>,
) -> Value {
    json!({"field": field, "fieldtype": fieldtype, "fieldId": field.to_lowercase(), "from": from,
        "fromString": from_s, "to": to, "toString": to_s})
}

impl FakeState {
    fn find(&self, key_or_id: &str) -> Option<u64> {
        if let Ok(id) = key_or_id.parse::<u64>() {
            return self.issues.contains_key(&id).then_some(id);
        }
        self.keys
            .get(key_or_id)
            .or_else(|| self.old_keys.get(key_or_id))
            .copied()
            .filter(|id| self.issues.contains_key(id))
    }

    /// Advances the fake clock by a second; returns the new time.
    fn tick(&mut self) -> i64 {
        self.clock_ms += 1000;
        self.clock_ms
    }

    fn record_history(&mut self, id: u64, items: Vec<Value>) {
        let hid = self.next_id;
        self.next_id += 1;
        let now = self.clock_ms;
        let i = self.issues.get_mut(&id).expect("issue");
        i.updated = now;
        i.histories.push(json!({"id": hid.to_string(), "author": user(), "created": jira_time(now), "items": items}));
    }

    fn last_history(&self, id: u64) -> Value {
        let h = self.issues[&id]
            .histories
            .last()
            .cloned()
            .unwrap_or(Value::Null);
        json!({"id": h["id"], "items": h["items"]})
    }

    fn issue_ref(&self, id: u64, base: &str) -> Value {
        let i = &self.issues[&id];
        json!({"id": i.id.to_string(), "self": format!("{base}/rest/api/3/issue/{}", i.id), "key": i.key,
            "fields": {"summary": i.summary, "created": jira_time(i.created), "updated": jira_time(i.updated),
                "project": {"key": i.project}, "issuetype": {"name": i.issue_type},
                "status": {"name": i.status.0, "statusCategory": {"key": i.status.1}}}})
    }

    fn render_comment(&self, id: u64, comment_id: u64) -> Value {
        let c = self.issues[&id]
            .comments
            .iter()
            .find(|c| c.id == comment_id)
            .expect("comment");
        json!({"id": c.id.to_string(), "author": user(), "updateAuthor": user(), "body": c.body,
            "created": jira_time(c.created), "updated": jira_time(c.updated), "jsdPublic": true})
    }

    fn render_link_event(&self, lid: u64) -> Value {
        let l = &self.links[&lid];
        let (o, i) = verbs(&l.kind);
        json!({"id": lid, "sourceIssueId": l.outward, "destinationIssueId": l.inward,
            "issueLinkType": {"id": 10000, "name": l.kind, "outwardName": o, "inwardName": i,
                "isSubTaskLinkType": false, "isSystemLinkType": false}, "systemLink": false})
    }

    fn render_links(&self, id: u64) -> Vec<Value> {
        let brief = |other: u64| {
            let o = &self.issues[&other];
            json!({"id": o.id.to_string(), "key": o.key, "fields": {"summary": o.summary,
                "status": {"name": o.status.0}, "issuetype": {"name": o.issue_type}}})
        };
        self.links
            .iter()
            .filter_map(|(lid, l)| {
                let (o, i) = verbs(&l.kind);
                let kind = json!({"id": "10000", "name": l.kind, "inward": i, "outward": o});
                if l.outward == id {
                    Some(json!({"id": lid.to_string(), "type": kind, "outwardIssue": brief(l.inward)}))
                } else if l.inward == id {
                    Some(json!({"id": lid.to_string(), "type": kind, "inwardIssue": brief(l.outward)}))
                } else {
                    None
                }
            })
            .collect()
    }

    fn render_issue(&self, id: u64, base: &str) -> Value {
        let i = &self.issues[&id];
        let comments: Vec<Value> = i
            .comments
            .iter()
            .take(self.comment_limit)
            .map(|c| self.render_comment(id, c.id))
            .collect();
        let histories: Vec<Value> = i
            .histories
            .iter()
            .rev()
            .take(self.changelog_limit)
            .cloned()
            .collect();
        let mut fields = json!({
            "summary": i.summary,
            "project": {"id": "100", "key": i.project, "name": format!("Project {}", i.project)},
            "issuetype": {"id": "3", "name": i.issue_type, "subtask": false},
            "status": {"id": "1", "name": i.status.0, "statusCategory": {"id": 2, "key": i.status.1, "name": i.status.0}},
            "priority": {"id": "3", "name": "Medium"},
            "resolution": i.resolved.map(|_| json!({"name": "Done"})),
            "resolutiondate": i.resolved.map(jira_time),
            "assignee": user(), "reporter": user(), "creator": user(),
            "created": jira_time(i.created), "updated": jira_time(i.updated),
            "duedate": null, "labels": i.labels, "components": [{"name": "API"}],
            "fixVersions": [], "versions": [],
            "customfield_10020": i.sprint.as_ref().map(|s| json!([{"id": 7, "name": s, "state": "active", "boardId": 1}])),
            "customfield_10016": i.story_points,
            "customfield_10050": i.team.as_ref().map(|t| json!({"self": "x", "value": t, "id": "10100"})),
            "customfield_10051": null
        });
        let f = fields.as_object_mut().expect("object");
        f.insert("description".into(), i.description.clone());
        if let Some(p) = &i.parent {
            f.insert("parent".into(), json!({"key": p}));
        }
        f.insert("comment".into(), json!({"comments": comments, "maxResults": self.comment_limit, "total": i.comments.len(), "startAt": 0}));
        f.insert("issuelinks".into(), Value::Array(self.render_links(id)));
        f.insert("attachment".into(), Value::Array(i.attachments.clone()));
        json!({"expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
            "id": i.id.to_string(), "self": format!("{base}/rest/api/3/issue/{}", i.id), "key": i.key,
            "renderedFields": {"summary": i.summary},
            "fields": fields,
            "changelog": {"startAt": 0, "maxResults": self.changelog_limit, "total": i.histories.len(), "histories": histories}})
    }

    fn take_faults(&mut self, route: Route) -> (Vec<Duration>, Option<FaultKind>) {
        let mut delays = Vec::new();
        let mut failure = None;
        for f in self.faults.iter_mut() {
            if f.remaining == 0 || (f.route != route && f.route != Route::Any) {
                continue;
            }
            match &f.kind {
                FaultKind::Delay(d) => {
                    delays.push(*d);
                    f.remaining -= 1;
                }
                kind if failure.is_none() => {
                    failure = Some(kind.clone());
                    f.remaining -= 1;
                }
                _ => {}
            }
        }
        self.faults.retain(|f| f.remaining > 0);
        (delays, failure)
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/rest/api/3/field", get(fields))
        .route("/rest/api/3/issue/{key}", get(issue))
        .route("/rest/api/3/issue/{key}/changelog", get(changelog))
        .route("/rest/api/3/issue/{key}/comment", get(comments))
        .route("/rest/api/3/issue/{key}/remotelink", get(remote_links))
        .route("/rest/api/3/search/jql", get(search))
        .route("/fake/webhook-sink", post(sink))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "No such endpoint in the fake") })
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), gate))
        .with_state(shared)
}

fn classify(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["rest", "api", "3", "field"] => Some(Route::Fields),
        ["rest", "api", "3", "issue", _] => Some(Route::Issue),
        ["rest", "api", "3", "issue", _, "changelog"] => Some(Route::Changelog),
        ["rest", "api", "3", "issue", _, "comment"] => Some(Route::Comments),
        ["rest", "api", "3", "issue", _, "remotelink"] => Some(Route::RemoteLinks),
        ["rest", "api", "3", "search", "jql"] => Some(Route::Search),
        _ => None,
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"errorMessages": [message], "errors": {}})),
    )
        .into_response()
}

/// Counts requests, checks basic auth on the API, applies injected faults.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if path.starts_with("/fake/") {
        return next.run(request).await;
    }
    let route = classify(&path);
    let expected = format!(
        "Basic {}",
        base64_padded(format!("{FAKE_EMAIL}:{}", shared.token).as_bytes())
    );
    let authorized = request
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    let (delays, failure) = {
        let mut state = shared.lock();
        for counted in [Some(Route::Any), route].into_iter().flatten() {
            *state.counts.entry(counted).or_default() += 1;
        }
        if !authorized {
            return error(
                StatusCode::UNAUTHORIZED,
                "Client must be authenticated to access this resource.",
            );
        }
        match route {
            Some(r) => state.take_faults(r),
            None => (Vec::new(), None),
        }
    };
    for d in delays {
        tokio::time::sleep(d).await;
    }
    match failure {
        Some(FaultKind::Fail(status)) => error(status, "Injected failure"),
        Some(FaultKind::RateLimit(secs)) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded.");
            r.headers_mut()
                .insert("Retry-After", secs.to_string().parse().expect("header"));
            r
        }
        _ => next.run(request).await,
    }
}

async fn fields() -> Json<Value> {
    Json(json!([
        {"id": "summary", "key": "summary", "name": "Summary", "custom": false, "orderable": true, "navigable": true,
         "searchable": true, "clauseNames": ["summary"], "schema": {"type": "string", "system": "summary"}},
        {"id": "status", "key": "status", "name": "Status", "custom": false, "orderable": false, "navigable": true,
         "searchable": true, "clauseNames": ["status"], "schema": {"type": "status", "system": "status"}},
        {"id": "customfield_10020", "key": "customfield_10020", "name": "Sprint", "untranslatedName": "Sprint", "custom": true,
         "orderable": true, "navigable": true, "searchable": true, "clauseNames": ["cf[10020]", "Sprint"],
         "schema": {"type": "array", "items": "json", "custom": "com.pyxis.greenhopper.jira:gh-sprint", "customId": 10020}},
        {"id": "customfield_10016", "key": "customfield_10016", "name": "Story point estimate", "custom": true,
         "orderable": true, "navigable": true, "searchable": true, "clauseNames": ["cf[10016]", "Story point estimate"],
         "schema": {"type": "number", "custom": "com.pyxis.greenhopper.jira:jsw-story-points", "customId": 10016}},
        {"id": "customfield_10050", "key": "customfield_10050", "name": "Team", "custom": true,
         "orderable": true, "navigable": true, "searchable": true, "clauseNames": ["cf[10050]", "Team"],
         "schema": {"type": "option", "custom": "com.atlassian.jira.plugin.system.customfieldtypes:select", "customId": 10050}},
        {"id": "customfield_10051", "key": "customfield_10051", "name": "Severity", "custom": true,
         "orderable": true, "navigable": true, "searchable": true, "clauseNames": ["cf[10051]", "Severity"],
         "schema": {"type": "number", "custom": "com.atlassian.jira.plugin.system.customfieldtypes:float", "customId": 10051}}
    ]))
}

fn page_params(q: &HashMap<String, String>, cap: usize, default: usize) -> (usize, usize) {
    let start = q.get("startAt").and_then(|s| s.parse().ok()).unwrap_or(0);
    let max = q
        .get("maxResults")
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
        .clamp(1, cap);
    (start, max)
}

const NOT_FOUND: &str = "Issue does not exist or you do not have permission to see it.";

async fn issue(State(shared): State<Arc<Shared>>, Path(key): Path<String>) -> Response {
    let s = shared.lock();
    match s.find(&key) {
        Some(id) => Json(s.render_issue(id, &shared.base)).into_response(),
        None => error(StatusCode::NOT_FOUND, NOT_FOUND),
    }
}

async fn changelog(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = shared.lock();
    let Some(id) = s.find(&key) else {
        return error(StatusCode::NOT_FOUND, NOT_FOUND);
    };
    let (start, max) = page_params(&q, 100, 100);
    let all = &s.issues[&id].histories;
    let values: Vec<Value> = all.iter().skip(start).take(max).cloned().collect();
    Json(json!({"self": format!("{}/rest/api/3/issue/{key}/changelog", shared.base), "maxResults": max, "startAt": start,
        "total": all.len(), "isLast": start + values.len() >= all.len(), "values": values}))
    .into_response()
}

async fn comments(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = shared.lock();
    let Some(id) = s.find(&key) else {
        return error(StatusCode::NOT_FOUND, NOT_FOUND);
    };
    let (start, max) = page_params(&q, 100, 100);
    let all = &s.issues[&id].comments;
    let values: Vec<Value> = all
        .iter()
        .skip(start)
        .take(max)
        .map(|c| s.render_comment(id, c.id))
        .collect();
    Json(json!({"startAt": start, "maxResults": max, "total": all.len(), "comments": values}))
        .into_response()
}

async fn remote_links(State(shared): State<Arc<Shared>>, Path(key): Path<String>) -> Response {
    let s = shared.lock();
    match s.find(&key) {
        Some(id) => Json(Value::Array(s.issues[&id].remote_links.clone())).into_response(),
        None => error(StatusCode::NOT_FOUND, NOT_FOUND),
    }
}

async fn search(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let jql = q.get("jql").cloned().unwrap_or_default();
    let filter = match Jql::parse(&jql) {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Error in the JQL Query: {e}"),
            )
        }
    };
    let (_, max) = page_params(&q, 100, 50);
    let offset: usize = match q.get("nextPageToken") {
        None => 0,
        Some(t) => match t.strip_prefix("fake-page-").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return error(StatusCode::BAD_REQUEST, "Invalid nextPageToken"),
        },
    };
    let wanted: Vec<String> = q
        .get("fields")
        .map(|f| f.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let s = shared.lock();
    let matching: Vec<&Issue> = s.issues.values().filter(|i| filter.matches(i)).collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(max)
        .map(|i| {
            // The cheap fields directly; any other one from the full rendering.
            let mut fields = serde_json::Map::new();
            let mut full = None;
            for w in &wanted {
                let v = match w.as_str() {
                    "updated" => json!(jira_time(i.updated)),
                    "created" => json!(jira_time(i.created)),
                    "summary" => json!(i.summary),
                    _ => full
                        .get_or_insert_with(|| s.render_issue(i.id, &shared.base))
                        .pointer(&format!("/fields/{w}"))
                        .cloned()
                        .unwrap_or(Value::Null),
                };
                fields.insert(w.clone(), v);
            }
            json!({"id": i.id.to_string(), "key": i.key,
                "self": format!("{}/rest/api/3/issue/{}", shared.base, i.id), "fields": fields})
        })
        .collect();
    let next = offset + page.len();
    let is_last = next >= matching.len();
    let mut body = json!({"issues": page, "isLast": is_last});
    if !is_last {
        body["nextPageToken"] = json!(format!("fake-page-{next}"));
    }
    Json(body).into_response()
}

async fn sink(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    shared.lock().sink.push((headers, body));
    StatusCode::ACCEPTED
}

/// The JQL subset the fake understands: OR-groups of clauses joined by AND.
struct Jql {
    all: Vec<Vec<Clause>>,
}

enum Clause {
    AnyProject,
    Project(Vec<String>),
    Key(String),
    Time {
        field: &'static str,
        ge: bool,
        at: i64,
    },
}

impl Jql {
    fn parse(jql: &str) -> Result<Jql, String> {
        let lower = jql.to_ascii_lowercase();
        let body = match lower.find("order by") {
            Some(at) => &jql[..at],
            None => jql,
        };
        let and = regex::Regex::new(r"(?i)\s+AND\s+").expect("regex");
        let or = regex::Regex::new(r"(?i)\s+OR\s+").expect("regex");
        let mut all = Vec::new();
        for group in and.split(body.trim()) {
            let group = group
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .trim();
            if group.is_empty() {
                return Err("the query is empty".into());
            }
            let clauses = or
                .split(group)
                .map(|c| {
                    Clause::parse(
                        c.trim()
                            .trim_start_matches('(')
                            .trim_end_matches(')')
                            .trim(),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            all.push(clauses);
        }
        if all.is_empty() {
            return Err("unbounded queries are not allowed".into());
        }
        Ok(Jql { all })
    }

    fn matches(&self, i: &Issue) -> bool {
        self.all
            .iter()
            .all(|group| group.iter().any(|c| c.matches(i)))
    }
}

impl Clause {
    fn parse(c: &str) -> Result<Clause, String> {
        let l = c.to_ascii_lowercase();
        let value = |s: &str| s.trim().trim_matches('"').to_string();
        if l == "project is not empty" {
            return Ok(Clause::AnyProject);
        }
        if let Some(rest) = l.strip_prefix("project in") {
            let inner = rest.trim().trim_start_matches('(').trim_end_matches(')');
            return Ok(Clause::Project(
                inner.split(',').map(|p| value(p).to_uppercase()).collect(),
            ));
        }
        if let Some(rest) = c
            .strip_prefix("project =")
            .or_else(|| c.strip_prefix("project="))
        {
            return Ok(Clause::Project(vec![value(rest).to_uppercase()]));
        }
        if let Some(rest) = c.strip_prefix("key =").or_else(|| c.strip_prefix("key=")) {
            return Ok(Clause::Key(value(rest)));
        }
        for field in ["created", "updated"] {
            for (op, ge) in [(">=", true), ("<=", false)] {
                if let Some(rest) = l.strip_prefix(&format!("{field} {op}")) {
                    let day = chrono::NaiveDate::parse_from_str(&value(rest), "%Y-%m-%d")
                        .map_err(|_| format!("`{c}`: the date must be \"YYYY-MM-DD\""))?;
                    let mut at = day
                        .and_hms_opt(0, 0, 0)
                        .expect("midnight")
                        .and_utc()
                        .timestamp_millis();
                    if !ge {
                        at += 86_400_000 - 1;
                    }
                    return Ok(Clause::Time { field, ge, at });
                }
            }
        }
        Err(format!("the fake does not understand `{c}`"))
    }

    fn matches(&self, i: &Issue) -> bool {
        match self {
            Clause::AnyProject => true,
            Clause::Project(ps) => ps.contains(&i.project),
            Clause::Key(k) => *k == i.key,
            Clause::Time { field, ge, at } => {
                let t = if *field == "created" {
                    i.created
                } else {
                    i.updated
                };
                if *ge {
                    t >= *at
                } else {
                    t <= *at
                }
            }
        }
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // RFC 2104, written out here so the fake does not sign with the code it tests.
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64_padded(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                A[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}
