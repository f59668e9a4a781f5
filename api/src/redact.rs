//! Credentials never reach an error message or a log line: URIs with credentials in them are
//! refused (`uri_credentials`), and every text that may quote a URI, a header or a line of a
//! configuration file goes through `redact` before it is shown.
//!
//! Redaction works on the text's form, not on known secret values, so it also covers secrets
//! Orchestra never saw (a line of a user's kubeconfig quoted by a YAML parser).

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Keys whose values are secrets, in YAML (`key: value`), JSON (`"key": "value"`), query strings
/// and environment assignments (`key=value`). Matched case-insensitively, `-` and `_` alike.
const SECRET_KEYS: [&str; 16] = [
    "token",
    "id-token",
    "refresh-token",
    "access-token",
    "password",
    "passwd",
    "secret",
    "client-secret",
    "client-key-data",
    "secret-access-key",
    "aws-secret-access-key",
    "aws-session-token",
    "session-token",
    "account-key",
    "x-amz-signature",
    "sig",
];

/// Where the credentials of a URI are: `Some(reason)` when `uri` carries a user and password
/// (`s3://KEY:SECRET@bucket`) or a secret query parameter (`?token=...`).
pub fn uri_credentials(uri: &str) -> Option<&'static str> {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Some("it carries credentials (user:password@)");
    }
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    let secret_param = query
        .split('&')
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
        .any(is_secret_key);
    secret_param.then_some("it carries a secret query parameter")
}

fn normalise(key: &str) -> String {
    key.trim()
        .trim_matches(['"', '\''])
        .to_ascii_lowercase()
        .replace('_', "-")
}

fn is_secret_key(key: &str) -> bool {
    let key = normalise(key);
    // The last word of a dotted or prefixed key counts too (`user.token`, `AWS_SECRET_ACCESS_KEY`).
    SECRET_KEYS
        .iter()
        .any(|s| key == *s || key.ends_with(&format!("-{s}")) || key.ends_with(&format!(".{s}")))
}

/// `text` with every credential it may hold replaced by `<redacted>`: the user and password of
/// URIs, `Bearer`/`Basic` authorisation values, and the values of secret keys (see
/// `SECRET_KEYS`) in `key: value`, `key=value` and `"key": "value"` forms.
pub fn redact(text: &str) -> String {
    let text = redact_userinfo(text);
    let text = redact_after_words(&text, &["Bearer ", "Basic "]);
    redact_key_values(&text)
}

/// `scheme://user:password@host` -> `scheme://<redacted>@host`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str(REDACTED);
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// The word after each of `words` (an authorisation scheme) replaced.
fn redact_after_words(text: &str, words: &[&str]) -> String {
    let mut out = text.to_string();
    for word in words {
        let mut from = 0;
        while let Some(i) = out[from..].find(word) {
            let start = from + i + word.len();
            let end = out[start..]
                .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
                .map_or(out.len(), |e| start + e);
            from = if end > start {
                out.replace_range(start..end, REDACTED);
                start + REDACTED.len()
            } else {
                start
            };
        }
    }
    out
}

/// Values of secret keys replaced, up to the end of the value (whitespace, `,`, `&`, `;`, a
/// closing quote or brace).
fn redact_key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut last = 0;
    while i < bytes.len() {
        let sep = bytes[i];
        if sep != b':' && sep != b'=' {
            i += 1;
            continue;
        }
        // The key: the identifier characters (and quotes) right before the separator.
        let key_start = text[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "-_.\"'".contains(c)))
            .map_or(0, |k| k + 1);
        if key_start == i || !is_secret_key(&text[key_start..i]) {
            i += 1;
            continue;
        }
        // The value: after spaces and an opening quote, up to its end.
        let mut start = i + 1;
        while start < bytes.len() && bytes[start] == b' ' {
            start += 1;
        }
        let quoted = start < bytes.len() && (bytes[start] == b'"' || bytes[start] == b'\'');
        if quoted {
            start += 1;
        }
        let end = text[start..]
            .find(|c: char| {
                if quoted {
                    c == '"' || c == '\'' || c == '\n'
                } else {
                    c.is_whitespace() || ",&;}]\"'".contains(c)
                }
            })
            .map_or(text.len(), |e| start + e);
        if end > start {
            out.push_str(&text[last..start]);
            out.push_str(REDACTED);
            last = end;
        }
        i = end.max(i + 1);
    }
    out.push_str(&text[last..]);
    out
}

/// Standard error with every write redacted: the binaries' log writer. A log event is written
/// in one call (tracing-subscriber formats a whole line first), so a secret never straddles
/// two writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Why a URI with credentials is refused, and where the credentials go instead.
pub fn credentials_refused(reason: &str) -> String {
    format!(
        "{reason}: URIs are logged, stored in Trial objects and shown in errors; give credentials \
         through the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, \
         GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_KEY) or, on Kubernetes, a Secret \
         named by spec.storeSecret"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_every_form_are_redacted() {
        let cases = [
            (
                "store s3://AKIDEXAMPLE:wJalrXUtnFEMI@bucket/runs failed",
                "wJalrXUtnFEMI",
            ),
            ("s3://AKIDEXAMPLE:wJalrXUtnFEMI@bucket", "AKIDEXAMPLE"),
            (
                "    token: eyJhbGciOiJSUzI1NiIsImtpZCI6",
                "eyJhbGciOiJSUzI1NiIsImtpZCI6",
            ),
            ("client-key-data: LS0tLS1CRUdJTiBSU0E=", "LS0tLS1CRUdJTiBSU0E="),
            ("{\"password\": \"hunter2hunter2\"}", "hunter2hunter2"),
            ("AWS_SECRET_ACCESS_KEY=abc/def+ghi", "abc/def+ghi"),
            ("authorization: Bearer abcdef0123456789", "abcdef0123456789"),
            ("header Bearer abcdef0123456789 sent", "abcdef0123456789"),
            (
                "https://acct.blob.core.windows.net/c?sv=2020&sig=Zm9vYmFy&se=1",
                "Zm9vYmFy",
            ),
            ("id_token: 'quoted secret value'", "quoted secret value"),
        ];
        for (text, secret) in cases {
            let shown = redact(text);
            assert!(!shown.contains(secret), "{text:?} -> {shown:?}");
            assert!(shown.contains(REDACTED), "{text:?} -> {shown:?}");
        }
    }

    #[test]
    fn text_without_credentials_is_unchanged() {
        for text in [
            "store s3://bucket/runs: put exp/t0/result.json: 503",
            "spec.hyper.lambdaRate: 0.5 must be positive",
            "line 12 column 9: illegal placement of ':' indicator",
            "tokens file: token 2 is shorter than 16 characters",
            "missing or invalid bearer token",
            "dataset=file:///data/isic?size=128 steps=400",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn uris_with_credentials_are_found() {
        assert!(uri_credentials("s3://KEY:SECRET@bucket/p").is_some());
        assert!(uri_credentials("gs://user@bucket").is_some());
        assert!(uri_credentials("az://c/p?sig=abc").is_some());
        assert!(uri_credentials("s3://bucket/p@2x/images").is_none());
        assert!(uri_credentials("file:///runs").is_none());
        assert!(uri_credentials("synthetic://lesion?n=64&size=128").is_none());
    }
}
