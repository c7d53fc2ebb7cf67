//! The pure half of Jira's webhooks: checking a delivery's signature and reading what it is about.
//! The daemon's route (`POST /webhooks/jira/{source}`) calls these on the raw body before it
//! queues anything; this module does no I/O.
//!
//! A webhook registered with a secret carries `X-Hub-Signature: sha256=<hex>`, the HMAC-SHA256 of
//! the raw request body keyed by the secret. [`verify_signature`] recomputes it and compares in
//! constant time; a missing, malformed or different signature is refused (the route fails closed,
//! also when the source has no secret configured).
//!
//! Bodies are incomplete (an issue event has no comments; an issue-link event names issues by id
//! only), so no event is applied from its body: [`Event::action`] says which issues to refetch,
//! or which one to delete (`jira:issue_deleted` only — a deleted comment or attachment is an
//! ordinary change that the refetch drops).

use serde_json::Value;

/// The header a signed delivery carries.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature";
/// The header naming a delivery (the same on Jira's retries of it).
pub const IDENTIFIER_HEADER: &str = "X-Atlassian-Webhook-Identifier";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request has no X-Hub-Signature header")]
    Missing,
    #[error("the X-Hub-Signature header is not `sha256=<64 hex digits>`")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks `header` (the `X-Hub-Signature` value) against the HMAC-SHA256 of `body` keyed by
/// `secret`. The comparison takes the same time wherever the digests differ.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let (algorithm, hex) = header.split_once('=').ok_or(SignatureError::Malformed)?;
    if !algorithm.eq_ignore_ascii_case("sha256") {
        return Err(SignatureError::Malformed);
    }
    let given = decode_hex(hex.trim()).ok_or(SignatureError::Malformed)?;
    let expected = hmac_sha256(secret, body);
    if constant_time_eq(&given, &expected) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `X-Hub-Signature` value Jira sends for `body` (for tests and the fake server).
pub fn signature_header(secret: &[u8], body: &[u8]) -> String {
    let mac = hmac_sha256(secret, body);
    let mut s = String::from("sha256=");
    for b in mac {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

// The HMAC the Keboola connector's request signing already implements (RFC 2104 over sha2).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    crate::connectors::keboola::sigv4::hmac_sha256(key, message)
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Equal in time independent of where the first difference is.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the compiler from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// The `webhookEvent` of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    IssueCreated,
    IssueUpdated,
    IssueDeleted,
    CommentCreated,
    CommentUpdated,
    CommentDeleted,
    AttachmentCreated,
    AttachmentDeleted,
    IssueLinkCreated,
    IssueLinkDeleted,
    /// Any other event (worklogs, sprints, projects…): accepted, changes nothing here.
    Other(String),
}

impl EventKind {
    fn parse(name: &str) -> EventKind {
        match name {
            "jira:issue_created" => EventKind::IssueCreated,
            "jira:issue_updated" => EventKind::IssueUpdated,
            "jira:issue_deleted" => EventKind::IssueDeleted,
            "comment_created" => EventKind::CommentCreated,
            "comment_updated" => EventKind::CommentUpdated,
            "comment_deleted" => EventKind::CommentDeleted,
            "attachment_created" => EventKind::AttachmentCreated,
            "attachment_deleted" => EventKind::AttachmentDeleted,
            "issuelink_created" => EventKind::IssueLinkCreated,
            "issuelink_deleted" => EventKind::IssueLinkDeleted,
            other => EventKind::Other(other.to_string()),
        }
    }
}

/// An issue named by a delivery: by key when the body has it, else by id (issue-link events).
/// Both are accepted by the REST API wherever an `issueIdOrKey` is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IssueRef {
    Key(String),
    Id(String),
}

impl IssueRef {
    /// The key or id, as the REST API takes it in a path.
    pub fn as_str(&self) -> &str {
        match self {
            IssueRef::Key(s) | IssueRef::Id(s) => s,
        }
    }
}

/// What processing a delivery means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Refetch these issues and replace their rows (a 404 on refetch means deleted).
    Refetch(Vec<IssueRef>),
    /// Remove the issue's rows everywhere. The id comes along when the body has it, so rows left
    /// under an older key (the issue moved project) go too.
    Delete { issue: IssueRef, id: Option<String> },
    /// Nothing to do for this source.
    Ignore,
}

/// One parsed delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    /// The `webhookEvent` as sent.
    pub name: String,
    /// `X-Atlassian-Webhook-Identifier` when the delivery had it, else `sha256:<hex of the body>`:
    /// either way the same for a duplicate delivery.
    pub event_id: String,
    /// `timestamp`, milliseconds since the epoch, when present and numeric.
    pub timestamp_ms: Option<i64>,
    /// The issue's key and id, when the body names the issue.
    pub issue_key: Option<String>,
    pub issue_id: Option<String>,
    /// Issues an issue-link event connects (their ids).
    pub linked_issue_ids: Vec<String>,
    /// The comment or attachment id, for the audit log.
    pub object_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body is empty")]
    Empty,
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is not a JSON object")]
    NotObject,
    #[error("the body has no `webhookEvent` string")]
    NoEventName,
    #[error("a `{event}` body names no issue (no `issue.key` or `issue.id`)")]
    NoIssue { event: String },
}

/// Reads a delivery's body; `identifier` is its `X-Atlassian-Webhook-Identifier` header.
pub fn parse_event(body: &[u8], identifier: Option<&str>) -> Result<Event, EventError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(EventError::Empty);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    let obj = v.as_object().ok_or(EventError::NotObject)?;
    let name = obj
        .get("webhookEvent")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(EventError::NoEventName)?
        .to_string();
    let kind = EventKind::parse(&name);
    let text = |v: Option<&Value>| -> Option<String> {
        match v? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let issue = obj.get("issue");
    let mut issue_key = text(issue.and_then(|i| i.get("key")));
    let mut issue_id = text(issue.and_then(|i| i.get("id")));
    let mut object_id = None;
    let mut linked_issue_ids = Vec::new();
    match kind {
        EventKind::CommentCreated | EventKind::CommentUpdated | EventKind::CommentDeleted => {
            object_id = text(obj.get("comment").and_then(|c| c.get("id")));
        }
        EventKind::AttachmentCreated | EventKind::AttachmentDeleted => {
            let a = obj.get("attachment");
            object_id = text(a.and_then(|a| a.get("id")));
            // Attachment bodies may carry only the attachment; take its issue id when present.
            if issue_id.is_none() {
                issue_id = text(a.and_then(|a| a.get("issueId")));
            }
        }
        EventKind::IssueLinkCreated | EventKind::IssueLinkDeleted => {
            let l = obj.get("issueLink");
            object_id = text(l.and_then(|l| l.get("id")));
            for side in ["sourceIssueId", "destinationIssueId"] {
                if let Some(id) = text(l.and_then(|l| l.get(side))) {
                    if !linked_issue_ids.contains(&id) {
                        linked_issue_ids.push(id);
                    }
                }
            }
        }
        _ => {}
    }
    if issue_key.as_deref().is_some_and(|k| !is_issue_key(k)) {
        issue_key = None;
    }
    let names_issue = issue_key.is_some() || issue_id.is_some();
    let needs_issue = matches!(
        kind,
        EventKind::IssueCreated
            | EventKind::IssueUpdated
            | EventKind::IssueDeleted
            | EventKind::CommentCreated
            | EventKind::CommentUpdated
            | EventKind::CommentDeleted
    );
    if needs_issue && !names_issue {
        return Err(EventError::NoIssue { event: name });
    }
    let timestamp_ms = obj.get("timestamp").and_then(Value::as_i64);
    let event_id = identifier
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "sha256:{}",
                crate::connectors::fingerprint_of(&[String::from_utf8_lossy(body).into_owned()])
            )
        });
    Ok(Event {
        kind,
        name,
        event_id,
        timestamp_ms,
        issue_key,
        issue_id,
        linked_issue_ids,
        object_id,
    })
}

/// `PROJ-123`: an upper-case project key (letters, digits, `_`, starting with a letter), a dash,
/// a number. Anything else in a body is not used to build a request path.
pub fn is_issue_key(s: &str) -> bool {
    let Some((project, number)) = s.rsplit_once('-') else {
        return false;
    };
    let mut chars = project.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !number.is_empty()
        && number.len() <= 18
        && number.chars().all(|c| c.is_ascii_digit())
}

fn is_issue_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 18 && s.chars().all(|c| c.is_ascii_digit())
}

impl Event {
    /// The issue this event is about, by key when known.
    pub fn issue(&self) -> Option<IssueRef> {
        self.issue_key.clone().map(IssueRef::Key).or_else(|| {
            self.issue_id
                .clone()
                .filter(|i| is_issue_id(i))
                .map(IssueRef::Id)
        })
    }

    /// What processing this event means (see [`Action`]).
    pub fn action(&self) -> Action {
        match &self.kind {
            EventKind::IssueDeleted => match self.issue() {
                Some(issue) => Action::Delete {
                    issue,
                    id: self.issue_id.clone().filter(|i| is_issue_id(i)),
                },
                None => Action::Ignore,
            },
            EventKind::IssueLinkCreated | EventKind::IssueLinkDeleted => {
                let refs: Vec<IssueRef> = self
                    .linked_issue_ids
                    .iter()
                    .filter(|i| is_issue_id(i))
                    .map(|i| IssueRef::Id(i.clone()))
                    .collect();
                if refs.is_empty() {
                    Action::Ignore
                } else {
                    Action::Refetch(refs)
                }
            }
            EventKind::Other(_) => Action::Ignore,
            // Issue, comment and attachment events: the issue, refetched whole. An attachment
            // event that names no issue cannot be placed; the consistency check heals it.
            _ => match self.issue() {
                Some(issue) => Action::Refetch(vec![issue]),
                None => Action::Ignore,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn webhook_signature_is_hmac_sha256_of_the_raw_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let body = b"what do ya want for nothing?";
        let header = "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(signature_header(b"Jefe", body), header);
        assert_eq!(verify_signature(b"Jefe", body, Some(header)), Ok(()));
        assert_eq!(
            verify_signature(
                b"Jefe",
                body,
                Some(&header.to_uppercase().replace("SHA256", "sha256"))
            ),
            Ok(()),
            "hex digits in either case"
        );
    }

    #[test]
    fn webhook_bad_signatures_are_refused_with_the_reason() {
        let body = br#"{"webhookEvent":"jira:issue_updated"}"#;
        let good = signature_header(b"s3cret", body);
        assert_eq!(
            verify_signature(b"s3cret", body, None),
            Err(SignatureError::Missing)
        );
        for bad in [
            "",
            "sha256",
            "sha1=abcd",
            "sha256=xyz",
            &good[..good.len() - 2],
        ] {
            assert_eq!(
                verify_signature(b"s3cret", body, Some(bad)),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            verify_signature(b"other", body, Some(&good)),
            Err(SignatureError::Mismatch)
        );
        let mut tampered = body.to_vec();
        tampered[3] ^= 1;
        assert_eq!(
            verify_signature(b"s3cret", &tampered, Some(&good)),
            Err(SignatureError::Mismatch)
        );
    }

    fn parse(v: Value) -> Event {
        parse_event(v.to_string().as_bytes(), Some("evt-1")).unwrap()
    }

    #[test]
    fn webhook_issue_and_comment_events_refetch_the_issue() {
        let e = parse(
            json!({"timestamp": 1709478000000i64, "webhookEvent": "jira:issue_updated",
            "issue_event_type_name": "issue_generic", "issue": {"id": "10001", "key": "PROJ-123", "fields": {}}}),
        );
        assert_eq!(e.kind, EventKind::IssueUpdated);
        assert_eq!(e.event_id, "evt-1");
        assert_eq!(e.timestamp_ms, Some(1709478000000));
        assert_eq!(
            e.action(),
            Action::Refetch(vec![IssueRef::Key("PROJ-123".into())])
        );

        let e = parse(
            json!({"webhookEvent": "comment_deleted", "comment": {"id": "10757"},
            "issue": {"id": "11961", "key": "INDEV-28"}}),
        );
        assert_eq!(e.object_id.as_deref(), Some("10757"));
        assert_eq!(
            e.action(),
            Action::Refetch(vec![IssueRef::Key("INDEV-28".into())])
        );
    }

    #[test]
    fn webhook_only_an_issue_deletion_deletes() {
        let e = parse(
            json!({"webhookEvent": "jira:issue_deleted", "issue": {"id": "7", "key": "A-1"}}),
        );
        assert_eq!(
            e.action(),
            Action::Delete {
                issue: IssueRef::Key("A-1".into()),
                id: Some("7".into())
            }
        );
        let e = parse(
            json!({"webhookEvent": "attachment_deleted", "attachment": {"id": 5, "issueId": 7}}),
        );
        assert_eq!(e.action(), Action::Refetch(vec![IssueRef::Id("7".into())]));
    }

    #[test]
    fn webhook_link_events_refetch_both_issues_by_id() {
        let e = parse(
            json!({"timestamp": 1545123444746i64, "webhookEvent": "issuelink_created",
            "issueLink": {"id": 10656, "sourceIssueId": 11442, "destinationIssueId": 11961,
                "issueLinkType": {"id": 10000, "name": "Blocks"}}}),
        );
        assert_eq!(e.object_id.as_deref(), Some("10656"));
        assert_eq!(
            e.action(),
            Action::Refetch(vec![
                IssueRef::Id("11442".into()),
                IssueRef::Id("11961".into())
            ])
        );
    }

    #[test]
    fn webhook_other_events_are_ignored_and_unplaceable_ones_too() {
        let e = parse(json!({"webhookEvent": "sprint_started", "sprint": {"id": 1}}));
        assert_eq!(e.kind, EventKind::Other("sprint_started".into()));
        assert_eq!(e.action(), Action::Ignore);
        let e = parse(json!({"webhookEvent": "attachment_created", "attachment": {"id": "9"}}));
        assert_eq!(e.action(), Action::Ignore);
    }

    #[test]
    fn webhook_malformed_bodies_have_clear_errors() {
        assert_eq!(parse_event(b"  ", None), Err(EventError::Empty));
        assert!(matches!(
            parse_event(b"{not json", None),
            Err(EventError::NotJson(_))
        ));
        assert_eq!(parse_event(b"[1]", None), Err(EventError::NotObject));
        assert_eq!(parse_event(b"{}", None), Err(EventError::NoEventName));
        assert_eq!(
            parse_event(br#"{"webhookEvent":"jira:issue_updated","issue":{}}"#, None),
            Err(EventError::NoIssue {
                event: "jira:issue_updated".into()
            })
        );
        // A key that is not a key is not used (it would end up in a URL path).
        let e = parse_event(
            br#"{"webhookEvent":"jira:issue_updated","issue":{"key":"../../x","id":"12"}}"#,
            None,
        )
        .unwrap();
        assert_eq!(e.action(), Action::Refetch(vec![IssueRef::Id("12".into())]));
    }

    #[test]
    fn webhook_duplicate_deliveries_share_an_event_id_without_the_header() {
        let body = br#"{"webhookEvent":"jira:issue_created","issue":{"key":"A-1"}}"#;
        let a = parse_event(body, None).unwrap();
        let b = parse_event(body, Some(" ")).unwrap();
        assert!(a.event_id.starts_with("sha256:"));
        assert_eq!(a.event_id, b.event_id);
    }

    #[test]
    fn webhook_issue_keys_are_checked() {
        for k in ["A-1", "PROJ-123", "AB_2-99"] {
            assert!(is_issue_key(k), "{k}");
        }
        for k in ["", "a-1", "A-", "-1", "A-1x", "A 1", "../A-1", "A-1/../x"] {
            assert!(!is_issue_key(k), "{k}");
        }
    }
}
