//! AWS Signature Version 4 for the one kind of request the Keboola connector sends to S3: a `GET`
//! of an object, authenticated with the `Authorization` header (not a pre-signed URL).
//!
//! The steps are those of AWS's "Signature Calculations for the Authorization Header: Transferring
//! Payload in a Single Chunk": canonical request → string to sign → signing key derived from the
//! secret, date, region and service → hex HMAC-SHA256. HMAC-SHA256 is written here over `sha2`
//! (RFC 2104), so signing adds no dependency.
//!
//! It does not send anything, and holds no secret beyond the call: [`super::client`] builds the
//! request and calls [`authorization`] on every attempt (the date is part of the signature, and S3
//! refuses a request signed more than 15 minutes before it arrives). The fake Keboola server in
//! the tests recomputes signatures with the same functions from the requests it receives; the unit
//! tests pin them to AWS's published example.

use sha2::{Digest, Sha256};

/// The payload hash of a request whose body is not signed: S3 accepts it for any request, and a
/// `GET` has no body to hash anyway.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Who signs, and for which region and service.
#[derive(Clone, Copy)]
pub struct Signer<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

impl std::fmt::Debug for Signer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret key must not reach a log line through a `{:?}`.
        f.debug_struct("Signer")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// The parts of a request that are signed.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path exactly as sent: already URI-encoded (see [`uri_encode`]).
    pub path: &'a str,
    /// The canonical query string (parameters sorted, encoded), `""` when there is none.
    pub query: &'a str,
    /// The headers to sign, each sent with the request; `host` and `x-amz-date` must be among
    /// them. Names may be in any case; a name may appear only once.
    pub headers: &'a [(&'a str, &'a str)],
    /// The hex SHA-256 of the body, or [`UNSIGNED_PAYLOAD`].
    pub payload_hash: &'a str,
}

/// The `Authorization` header value for `request`, signed at `amz_date` (`YYYYMMDDTHHMMSSZ`, the
/// same value as the request's `x-amz-date` header).
pub fn authorization(signer: &Signer, request: &Request, amz_date: &str) -> String {
    let (canonical, signed_headers) = canonical_request(request);
    let scope = scope(signer, amz_date);
    let signature = signature(
        signer,
        amz_date,
        &string_to_sign(amz_date, &scope, &canonical),
    );
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope},SignedHeaders={signed_headers},Signature={signature}",
        signer.access_key_id
    )
}

/// The canonical request and its `SignedHeaders` list: header names lowercased and sorted, values
/// trimmed with inner runs of spaces collapsed.
pub fn canonical_request(request: &Request) -> (String, String) {
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.trim().to_ascii_lowercase(),
                value.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    headers.sort();
    let signed = headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut canonical = format!("{}\n{}\n{}\n", request.method, request.path, request.query);
    for (name, value) in &headers {
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(value);
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed);
    canonical.push('\n');
    canonical.push_str(request.payload_hash);
    (canonical, signed)
}

/// `date/region/service/aws4_request`.
fn scope(signer: &Signer, amz_date: &str) -> String {
    format!(
        "{}/{}/{}/aws4_request",
        date_part(amz_date),
        signer.region,
        signer.service
    )
}

fn date_part(amz_date: &str) -> &str {
    amz_date.get(..8).unwrap_or(amz_date)
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The hex signature of `string_to_sign`, with the key derived from the secret for the date,
/// region and service.
pub fn signature(signer: &Signer, amz_date: &str, string_to_sign: &str) -> String {
    let mut key = hmac_sha256(
        format!("AWS4{}", signer.secret_access_key).as_bytes(),
        date_part(amz_date).as_bytes(),
    );
    for part in [signer.region, signer.service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    hex(&hmac_sha256(&key, string_to_sign.as_bytes()))
}

/// `YYYYMMDDTHHMMSSZ`, the format of `x-amz-date`.
pub fn amz_date(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

/// SigV4's URI encoding: every byte but the unreserved `A–Z a–z 0–9 - _ . ~` as `%XX` (upper-case
/// hex); `/` kept as is when `keep_slash` (object key names in paths).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// HMAC-SHA256 (RFC 2104): SHA-256 over the key padded to the 64-byte block, XORed with the inner
/// and outer pads.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        // A key longer than the block is hashed first.
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example credentials of AWS's S3 SigV4 documentation.
    const EXAMPLE: Signer = Signer {
        access_key_id: "AKIAIOSFODNN7EXAMPLE",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region: "us-east-1",
        service: "s3",
    };
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // Test case 2: a key shorter than the block.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    /// "Example: GET Object" of AWS's "Signature Calculations for the Authorization Header:
    /// Transferring Payload in a Single Chunk": the first 10 bytes of `test.txt` in
    /// `examplebucket`, with the hash of the empty body as the payload hash.
    #[test]
    fn sigv4_signs_the_documented_s3_get_object_example() {
        let amz_date = "20130524T000000Z";
        let request = Request {
            method: "GET",
            path: "/test.txt",
            query: "",
            headers: &[
                ("Host", "examplebucket.s3.amazonaws.com"),
                ("Range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", amz_date),
            ],
            payload_hash: EMPTY_SHA256,
        };
        let (canonical, signed) = canonical_request(&request);
        assert_eq!(
            canonical,
            format!(
                "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
                 x-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:20130524T000000Z\n\n\
                 host;range;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}"
            )
        );
        let to_sign = string_to_sign(amz_date, &scope(&EXAMPLE, amz_date), &canonical);
        assert_eq!(
            to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(
            signature(&EXAMPLE, amz_date, &to_sign),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert_eq!(signed, "host;range;x-amz-content-sha256;x-amz-date");
        assert_eq!(
            authorization(&EXAMPLE, &request, amz_date),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn sigv4_header_values_are_trimmed_and_their_inner_spaces_collapsed() {
        let request = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &[
                ("X-Amz-Date", " 20130524T000000Z "),
                ("My-Header", "a   b  c"),
            ],
            payload_hash: UNSIGNED_PAYLOAD,
        };
        let (canonical, signed) = canonical_request(&request);
        assert!(canonical.contains("\nmy-header:a b c\nx-amz-date:20130524T000000Z\n"));
        assert_eq!(signed, "my-header;x-amz-date");
    }

    #[test]
    fn sigv4_uri_encoding_keeps_unreserved_bytes_and_optionally_slashes() {
        assert_eq!(
            uri_encode("exp-15/a b/part=1~x_y.csv.gz", true),
            "exp-15/a%20b/part%3D1~x_y.csv.gz"
        );
        assert_eq!(uri_encode("a/b+c", false), "a%2Fb%2Bc");
        assert_eq!(uri_encode("é", true), "%C3%A9");
    }

    #[test]
    fn sigv4_amz_date_is_the_basic_iso_format() {
        let at = chrono::DateTime::from_timestamp(1_369_353_600, 0).expect("a valid time");
        assert_eq!(amz_date(at), "20130524T000000Z");
    }
}
