//! API users, groups and bearer tokens (`pipeline admin token …`, checked by the daemon).
//!
//! A token is shown once, when it is created; the state keeps only its SHA-256 and a short prefix
//! for listings. Group membership belongs to the user, so every token of a user sees the same tables.

use super::{Reader, StateResult, Writer};
use duckdb::{params, Connection, OptionalExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Every token starts with this, so secret scanners and people recognise one.
pub const TOKEN_PREFIX: &str = "pl_";
/// Members of this group may read every table, whatever its `access` says.
pub const ADMIN_GROUP: &str = "admin";

#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    /// The first characters of the token, enough to recognise it.
    pub prefix: String,
    pub groups: Vec<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub groups: Vec<String>,
    pub token_id: String,
}

impl Caller {
    /// Whether this caller may read a table readable by `access` (empty: everyone authenticated).
    pub fn may_read(&self, access: &[String]) -> bool {
        access.is_empty()
            || self
                .groups
                .iter()
                .any(|g| g == ADMIN_GROUP || access.contains(g))
    }
}

/// Why a bearer token was not accepted; the API says it in its 401 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid(Caller),
    Unknown,
    Revoked,
    UserDisabled,
}

fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn ts(col: &str) -> String {
    super::ts(col)
}

/// Creates a token for `user` (created if new), adding the user to `groups`. Returns the token's
/// listing and the secret, which is not stored and cannot be shown again.
pub fn create_token(
    w: &mut Writer,
    user: &str,
    groups: &[String],
    who: &str,
) -> StateResult<(TokenInfo, String)> {
    let io = |e: std::io::Error| super::StateError::Io("/dev/urandom".into(), e);
    let secret = format!("{TOKEN_PREFIX}{}", random_hex(24).map_err(io)?);
    let id = random_hex(4).map_err(io)?;
    let prefix: String = secret.chars().take(TOKEN_PREFIX.len() + 6).collect();
    let tx = w.conn().transaction()?;
    tx.execute(
        "INSERT INTO users (name) VALUES (?) ON CONFLICT DO NOTHING",
        params![user],
    )?;
    for g in groups {
        tx.execute(
            "INSERT INTO groups (name) VALUES (?) ON CONFLICT DO NOTHING",
            params![g],
        )?;
        tx.execute(
            "INSERT INTO group_members (group_name, user_name) VALUES (?, ?) ON CONFLICT DO NOTHING",
            params![g, user],
        )?;
    }
    tx.execute(
        "INSERT INTO tokens (id, user_name, prefix, hash) VALUES (?, ?, ?, ?)",
        params![id, user, prefix, hash(&secret)],
    )?;
    audit(
        &tx,
        who,
        "token.create",
        &id,
        serde_json::json!({"user": user, "groups": groups}),
    )?;
    tx.commit()?;
    let info = tokens(&w.conn)?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| super::StateError::Refused(format!("token {id} vanished")))?;
    Ok((info, secret))
}

fn audit(
    conn: &Connection,
    who: &str,
    action: &str,
    object: &str,
    detail: serde_json::Value,
) -> StateResult<()> {
    conn.execute(
        "INSERT INTO audit_log (who, action, object, detail) VALUES (?, ?, ?, ?)",
        params![who, action, object, detail.to_string()],
    )?;
    Ok(())
}

fn groups_of(conn: &Connection, user: &str) -> StateResult<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT group_name FROM group_members WHERE user_name = ? ORDER BY 1")?;
    let groups = stmt
        .query_map(params![user], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(groups)
}

/// Every token, newest first, revoked ones included.
pub fn list_tokens(r: &Reader) -> StateResult<Vec<TokenInfo>> {
    tokens(&r.conn)
}

fn tokens(conn: &Connection) -> StateResult<Vec<TokenInfo>> {
    let sql = format!(
        "SELECT id, user_name, prefix, {}, {}, {} FROM tokens ORDER BY created_at DESC, id",
        ts("created_at"),
        ts("last_used_at"),
        ts("revoked_at")
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(TokenInfo {
                id: r.get(0)?,
                user: r.get(1)?,
                prefix: r.get(2)?,
                groups: Vec::new(),
                created_at: r.get(3)?,
                last_used_at: r.get(4)?,
                revoked_at: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|mut t| {
            t.groups = groups_of(conn, &t.user)?;
            Ok(t)
        })
        .collect()
}

/// Revokes the token with this id (or whose prefix this is). Returns the revoked token, or `None`
/// when nothing matched; an already revoked token is returned unchanged.
pub fn revoke(w: &mut Writer, id: &str, who: &str) -> StateResult<Option<TokenInfo>> {
    let found: Vec<TokenInfo> = tokens(&w.conn)?
        .into_iter()
        .filter(|t| t.id == id || (id.len() >= 6 && t.prefix.starts_with(id)))
        .collect();
    let [token] = found.as_slice() else {
        if found.len() > 1 {
            return Err(super::StateError::Refused(format!(
                "`{id}` matches {} tokens; use the id from `pipeline admin token list`",
                found.len()
            )));
        }
        return Ok(None);
    };
    if token.revoked_at.is_none() {
        let tx = w.conn().transaction()?;
        tx.execute(
            "UPDATE tokens SET revoked_at = current_timestamp WHERE id = ?",
            params![token.id],
        )?;
        audit(
            &tx,
            who,
            "token.revoke",
            &token.id,
            serde_json::json!({"user": token.user}),
        )?;
        tx.commit()?;
    }
    Ok(tokens(&w.conn)?.into_iter().find(|t| t.id == token.id))
}

/// Records that a token was just used.
pub fn touch(w: &Writer, token_id: &str) -> StateResult<()> {
    w.conn.execute(
        "UPDATE tokens SET last_used_at = current_timestamp WHERE id = ?",
        params![token_id],
    )?;
    Ok(())
}

/// Checks a bearer token.
pub fn verify(r: &Reader, secret: &str) -> StateResult<Verdict> {
    verify_until(r, secret).map(|(v, _)| v)
}

/// [`verify`], with how long a valid token stays valid (`None`: until revoked).
pub fn verify_until(
    r: &Reader,
    secret: &str,
) -> StateResult<(Verdict, Option<std::time::Duration>)> {
    let conn = &r.conn;
    if !secret.starts_with(TOKEN_PREFIX) {
        return Ok((Verdict::Unknown, None));
    }
    let row: Option<(String, String, bool, bool, Option<i64>)> = conn
        .query_row(
            "SELECT t.id, t.user_name, t.revoked_at IS NOT NULL
                    OR (t.expires_at IS NOT NULL AND t.expires_at < current_timestamp),
                    coalesce(u.disabled, false),
                    CAST(epoch_ms(CAST(t.expires_at AS TIMESTAMPTZ)) - epoch_ms(current_timestamp) AS BIGINT)
             FROM tokens t LEFT JOIN users u ON u.name = t.user_name
             WHERE t.hash = ?",
            params![hash(secret)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    Ok(match row {
        None => (Verdict::Unknown, None),
        Some((_, _, true, _, _)) => (Verdict::Revoked, None),
        Some((_, _, _, true, _)) => (Verdict::UserDisabled, None),
        Some((token_id, user, false, false, left_ms)) => (
            Verdict::Valid(Caller {
                groups: groups_of(conn, &user)?,
                user,
                token_id,
            }),
            left_ms.map(|ms| std::time::Duration::from_millis(ms.max(0) as u64)),
        ),
    })
}

/// The SHA-256 of a token: how a verdict is remembered without keeping the secret.
pub fn token_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_until_revoked_and_is_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.duckdb");
        let mut w = super::super::StateStore::new(&path).write().unwrap();
        let (info, secret) =
            create_token(&mut w, "ann", &["analysts".to_string()], "admin").unwrap();
        assert!(secret.starts_with(TOKEN_PREFIX) && secret.len() > 40);
        assert!(secret.starts_with(&info.prefix));
        assert_eq!(info.groups, vec!["analysts"]);
        let stored: i64 = w
            .conn
            .query_row(
                "SELECT count(*) FROM tokens WHERE hash = ? OR prefix = ?",
                params![secret, secret],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, 0, "the secret itself is not in the state");
        match verify(&w, &secret).unwrap() {
            Verdict::Valid(c) => {
                assert_eq!(c.user, "ann");
                assert!(c.may_read(&["analysts".into()]));
                assert!(!c.may_read(&["finance".into()]));
                assert!(c.may_read(&[]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(verify(&w, "pl_nope").unwrap(), Verdict::Unknown);
        assert_eq!(verify(&w, "other").unwrap(), Verdict::Unknown);
        let revoked = revoke(&mut w, &info.id, "admin").unwrap().unwrap();
        assert!(revoked.revoked_at.is_some());
        assert_eq!(verify(&w, &secret).unwrap(), Verdict::Revoked);
        assert!(revoke(&mut w, "nothing", "admin").unwrap().is_none());
        let audited: i64 = w
            .conn
            .query_row(
                "SELECT count(*) FROM audit_log WHERE action LIKE 'token.%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(audited, 2);
    }

    #[test]
    fn admins_read_everything() {
        let c = Caller {
            user: "root".into(),
            groups: vec![ADMIN_GROUP.into()],
            token_id: "x".into(),
        };
        assert!(c.may_read(&["finance".into()]));
    }
}
