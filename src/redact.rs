//! Keeping credentials out of everything the process prints: log lines at every level, from our
//! code and from dependencies (an HTTP client's debug lines print request headers and URLs), and
//! error messages.
//!
//! Two defences, applied to each line before it is written:
//! - **Known secret values.** The process keeps a registry of the secrets it has read: the values
//!   of the environment variables that specs name (`*_env` connection keys, `remote_attach`
//!   token envs), and temporary credentials as they become known (a Keboola file detail's S3
//!   session token, a GCS access token). Each is masked wherever it appears, also percent-encoded,
//!   form-encoded, JSON-escaped and base64-encoded. Values shorter than [`MIN_SECRET_LEN`] are not
//!   registered: they would mask ordinary words.
//! - **Credential shapes**, for secrets nobody registered (a pre-signed URL's signature): the value
//!   of a credential header (`Authorization`, `X-StorageApi-Token`, `X-Amz-Security-Token`,
//!   `Cookie`…), of a credential query parameter (`X-Amz-Signature`, `X-Amz-Credential`,
//!   `X-Amz-Security-Token`, `X-Goog-Signature`, `sig`, `access_token`…) and a `Bearer` token.
//!
//! [`RedactingWriter`] applies both to each formatted `tracing` event (the CLI installs it for
//! stderr, the only place logs go); [`redact`] does the same for any text, such as the error line
//! the CLI prints last. Code that builds an error should still leave credentials out in the first
//! place: this is the net under it, not a licence to be careless.

use regex::Regex;
use std::borrow::Cow;
use std::io::Write;
use std::sync::{LazyLock, RwLock};

/// What a masked value becomes.
pub const MASK: &str = "<redacted>";

/// Shorter values are not registered (see the module documentation).
pub const MIN_SECRET_LEN: usize = 4;

/// Every registered form of every secret, longest first (so that a form containing another is
/// masked whole).
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers `secret`: from now on it is masked in every log line and in [`redact`]'s output.
pub fn register(secret: &str) {
    if secret.chars().count() < MIN_SECRET_LEN {
        return;
    }
    let mut forms = vec![secret.to_string()];
    for form in [
        percent_encode(secret, false),
        percent_encode(secret, true),
        json_escape(secret),
        base64(secret.as_bytes(), STANDARD),
        base64(secret.as_bytes(), URL_SAFE),
    ] {
        if form.len() >= MIN_SECRET_LEN && !forms.contains(&form) {
            forms.push(form);
        }
    }
    let mut all = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    let before = all.len();
    for form in forms {
        if !all.contains(&form) {
            all.push(form);
        }
    }
    if all.len() != before {
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Reads the environment variable `name` and registers its value as a secret; the value, when set
/// and not empty.
pub fn secret_env(name: &str) -> Option<String> {
    let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
    register(&value);
    Some(value)
}

/// A value between a credential's name and its value: `: `, `=`, `": "`, with the colour codes a
/// terminal log line may put around a field name.
const SEPARATOR: &str = r#"(?:\x1b\[[0-9;]*m|["' \t])*[:=](?:\x1b\[[0-9;]*m|["' \t])*"#;

/// `Name: value` (a header line, a `name=value` field, a `"name": "value"` pair): the value up to
/// the end of the line, a quote or a backslash (an escaped line break in a JSON log line).
static HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r#"(?i)((?:proxy-)?authorization|x-storageapi-token|x-amz-security-token|x-goog-api-key|x-api-key|private-token|set-cookie|cookie){SEPARATOR}"#
    ))
    .expect("a valid pattern")
});

/// A credential query parameter's value, up to the next parameter or the end of the URL.
static QUERY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)([?&;](?:x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential|signature|sig|awsaccesskeyid|access_token|token|client_secret|password|key)=)[^&\s"'\\#<>]+"#,
    )
    .expect("a valid pattern")
});

static BEARER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}").expect("a valid pattern")
});

/// `text` with every registered secret and every credential-shaped value masked.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    {
        let secrets = SECRETS.read().unwrap_or_else(|p| p.into_inner());
        for secret in secrets.iter() {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), MASK));
            }
        }
    }
    if let Some(masked) = mask_header_values(&out) {
        out = Cow::Owned(masked);
    }
    for (pattern, keep) in [(&*QUERY, "${1}"), (&*BEARER, "${1}")] {
        if pattern.is_match(&out) {
            let replacement = format!("{keep}{MASK}");
            out = Cow::Owned(pattern.replace_all(&out, replacement.as_str()).into_owned());
        }
    }
    out
}

/// Masks the value after each credential header name; `None` when there is none.
fn mask_header_values(text: &str) -> Option<String> {
    let mut found = HEADER.find_iter(text).peekable();
    found.peek()?;
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for name_and_separator in found {
        if name_and_separator.start() < from {
            continue; // inside a value already masked
        }
        if text[..name_and_separator.start()].ends_with(['?', '&', ';']) {
            continue; // a URL's query parameter: masked by `QUERY`, up to the next parameter
        }
        let value_start = name_and_separator.end();
        let value_len = text[value_start..]
            .find(['\r', '\n', '"', '\\'])
            .unwrap_or(text.len() - value_start);
        out.push_str(&text[from..value_start]);
        if value_len > 0 {
            out.push_str(MASK);
        }
        from = value_start + value_len;
    }
    out.push_str(&text[from..]);
    Some(out)
}

/// A `tracing_subscriber` writer factory that writes each event to stderr with [`redact`] applied:
/// the formatter hands over a whole event, which is buffered and masked as one piece, so a secret
/// is never split across two writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedactingWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingWriter {
    type Writer = RedactedEvent;

    fn make_writer(&'a self) -> RedactedEvent {
        RedactedEvent(Vec::new())
    }
}

/// One event's text, written (masked) to stderr when dropped.
pub struct RedactedEvent(Vec<u8>);

impl Write for RedactedEvent {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedEvent {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.0);
        // Nowhere to report a failed write of a log line.
        let _ = std::io::stderr().lock().write_all(redact(&text).as_bytes());
    }
}

/// RFC 3986 percent-encoding (unreserved characters kept, upper-case hex); `form` writes a space
/// as `+`, as HTML forms do.
fn percent_encode(s: &str, form: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' if form => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The text between the quotes of `s` as a JSON string.
fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(&quoted)
        .to_string()
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 without padding (a padded encoding contains it).
fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_masked_in_every_encoding() {
        let secret = "redact-unit/Secret+value=1";
        register(secret);
        for shown in [
            secret.to_string(),
            percent_encode(secret, false),
            base64(secret.as_bytes(), STANDARD),
            base64(secret.as_bytes(), URL_SAFE),
        ] {
            let line = format!("something said {shown} here");
            let masked = redact(&line);
            assert!(!masked.contains(&shown), "{masked}");
            assert!(masked.contains(MASK), "{masked}");
        }
        // Too short to mask without masking ordinary words.
        register("abc");
        assert_eq!(redact("abc abc"), "abc abc");
    }

    #[test]
    fn credential_headers_are_masked_in_text_json_and_debug_shapes() {
        let prelude = "writing prelude: GET /v2/storage/tables HTTP/1.1\r\nHost: h\r\n\
                       X-StorageApi-Token: 1234-abcd-unregistered\r\nAccept: */*\r\n";
        let masked = redact(prelude);
        assert!(!masked.contains("1234-abcd-unregistered"), "{masked}");
        assert!(masked.contains("X-StorageApi-Token: <redacted>\r\nAccept: */*"));
        let json = r#"{"message":"prelude\r\nx-amz-security-token: FwoGZXIvYXdz\r\nhost: x"}"#;
        assert_eq!(
            redact(json),
            r#"{"message":"prelude\r\nx-amz-security-token: <redacted>\r\nhost: x"}"#
        );
        let debug =
            r#"headers: {"authorization": "AWS4-HMAC-SHA256 Credential=ASIA/x, Signature=ab12"}"#;
        assert_eq!(redact(debug), r#"headers: {"authorization": "<redacted>"}"#);
        // A field on a terminal, with colour codes around its name.
        let coloured = "\x1b[3mauthorization\x1b[0m\x1b[2m=\x1b[0mBearer ya29.abc";
        assert!(!redact(coloured).contains("ya29"), "{:?}", redact(coloured));
        // Prose that only mentions a header is left alone.
        let prose = "S3 AuthorizationHeaderMalformed: the authorization header is malformed";
        assert_eq!(redact(prose), prose);
    }

    #[test]
    fn presigned_url_credentials_and_bearer_tokens_are_masked() {
        let url = "GET https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256\
                   &X-Amz-Credential=ASIAX%2F20260101%2Fus-east-1%2Fs3%2Faws4_request\
                   &X-Amz-Security-Token=FwoG%2Bsecret&X-Amz-Signature=0123abcd&federationToken=1 x";
        let masked = redact(url);
        for gone in ["ASIAX", "FwoG", "0123abcd"] {
            assert!(!masked.contains(gone), "{masked}");
        }
        assert!(
            masked.contains("X-Amz-Algorithm=AWS4-HMAC-SHA256"),
            "{masked}"
        );
        assert!(masked.contains("&federationToken=1 x"), "{masked}");
        assert_eq!(
            redact("sent Bearer ya29.a0AfH6SMB-token"),
            "sent Bearer <redacted>"
        );
    }

    #[test]
    fn base64_matches_the_standard_encoding() {
        assert_eq!(base64(b"", STANDARD), "");
        assert_eq!(base64(b"f", STANDARD), "Zg");
        assert_eq!(base64(b"fo", STANDARD), "Zm8");
        assert_eq!(base64(b"foo", STANDARD), "Zm9v");
        assert_eq!(base64(b"foobar", STANDARD), "Zm9vYmFy");
        assert_eq!(base64(&[0xfb, 0xff], URL_SAFE), "-_8");
    }
}
