//! Text for people: byte sizes, ages, the tail of a child's error output, and secrets
//! taken out of any text that is written down (manifests, the audit log, logs,
//! notifications, errors). A leaf module: it imports nothing of the crate.

/// 1536 -> "1.5 KiB".
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub(crate) fn human_age(d: jiff::SignedDuration) -> String {
    let s = d.as_secs().max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

/// The last lines of a child's stderr, on one line.
pub(crate) fn summarize(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(6)..];
    if tail.is_empty() {
        "(no error output)".to_string()
    } else {
        tail.join(" / ")
    }
}

/// The secret shapes `redact_secrets` replaces, and what replaces them.
const SECRET_PATTERNS: &[(&str, &str)] = &[
    // scheme://user:password@host
    (
        r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@",
        "${1}***@",
    ),
    // Authorization: Bearer xyz / Basic xyz / Token xyz
    (
        r"(?i)\b(authorization\s*[:=]\s*)(bearer\s+|basic\s+|token\s+)?[^\s'\x22]+",
        "${1}${2}***",
    ),
    (r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}", "${1} ***"),
    // password=..., "token": "...", api_key: ..., PGPASSWORD=...
    (
        r#"(?i)([a-z0-9_-]*(?:passw(?:or)?d|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)[a-z0-9_-]*\x22?\s*[:=]\s*\x22?)[^\s'\x22&,;}]+"#,
        "${1}***",
    ),
    // --password VALUE, --token VALUE, -p VALUE is too common to touch
    (
        r"(?i)(--?(?:passw(?:or)?d|token|secret|api-?key|access-?key|auth-token)\s+)[^\s'\x22]+",
        "${1}***",
    ),
    // Well-known token shapes.
    (r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", "***"),
    (r"\bgh[pousr]_[A-Za-z0-9]{20,}\b", "***"),
    (r"\bgithub_pat_[A-Za-z0-9_]{20,}\b", "***"),
    (r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b", "***"),
    (r"\bsk-[A-Za-z0-9_-]{20,}\b", "***"),
];

/// Secrets that travel in command lines, URLs and headers, each replaced by `***`:
/// URL credentials (`scheme://user:PASSWORD@`), `Authorization`/`Bearer`/`Basic` values,
/// `key=value` and `--key value` pairs whose key names a password, token, secret or key,
/// and the shapes of well-known tokens (AWS access keys, GitHub, Slack, OpenAI-style).
pub fn redact_secrets(text: &str) -> String {
    use std::sync::LazyLock;
    // Most text holds none of the shapes below: skip compiling and running the patterns
    // (compiling them costs about 2 ms, which the hook pays on every call).
    const TRIGGERS: &[&str] = &[
        "://",
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "bearer",
        "basic",
        "credential",
        "akia",
        "asia",
        "gh",
        "xox",
        "sk-",
    ];
    let lower = text.to_ascii_lowercase();
    if !TRIGGERS.iter().any(|t| lower.contains(t)) {
        return text.to_string();
    }
    static RULES: LazyLock<Vec<(regex_lite::Regex, &'static str)>> = LazyLock::new(|| {
        SECRET_PATTERNS
            .iter()
            .filter_map(|(re, with)| regex_lite::Regex::new(re).ok().map(|r| (r, *with)))
            .collect()
    });
    let mut out = std::borrow::Cow::Borrowed(text);
    for (re, with) in RULES.iter() {
        if let std::borrow::Cow::Owned(s) = re.replace_all(&out, *with) {
            out = std::borrow::Cow::Owned(s);
        }
    }
    out.into_owned()
}

/// Every string inside a JSON document, secrets redacted.
pub fn redact_json(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(redact_secrets(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(redact_json).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, redact_json(v))).collect())
        }
        other => other,
    }
}

/// A bounded, redacted excerpt of a command for records that outlive it (manifests, the
/// audit log), with the SHA-256 of the whole text so the exact command can be matched
/// later without being stored.
pub fn command_excerpt(text: &str, max_chars: usize) -> (String, String) {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    // Redact a bounded prefix: secrets never survive a cut in the middle of a match.
    let head: String = text.chars().take(max_chars * 4).collect();
    let red = redact_secrets(&head);
    let mut out: String = red.chars().take(max_chars).collect();
    if red.chars().count() > max_chars || head.len() < text.len() {
        out.push('…');
    }
    (out, hash)
}

#[cfg(test)]
mod tests {
    #[test]
    fn human() {
        assert_eq!(super::human_bytes(10), "10 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn secrets_are_redacted() {
        let cases = [
            (
                "psql postgres://admin:hunter2@db:5432/app -c 'DROP TABLE x'",
                "hunter2",
            ),
            (
                "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc.def' https://api/x",
                "eyJhbGciOiJIUzI1NiJ9",
            ),
            (
                "curl -H \"Authorization: token ghp_abcdefghijklmnopqrstuvwxyz0123\"",
                "ghp_abc",
            ),
            ("PGPASSWORD=s3cret psql -h db", "s3cret"),
            ("mysql --password hunter3 -e 'DROP DATABASE x'", "hunter3"),
            (
                "curl -d '{\"api_key\": \"k-12345678\"}' https://x",
                "k-12345678",
            ),
            (
                "aws s3 rb s3://b AKIAIOSFODNN7EXAMPLE",
                "AKIAIOSFODNN7EXAMPLE",
            ),
            ("https://hooks.example.com/x?token=abcdef123", "abcdef123"),
        ];
        for (text, secret) in cases {
            let r = super::redact_secrets(text);
            assert!(!r.contains(secret), "{text} -> {r}");
            assert!(r.contains("***"), "{text} -> {r}");
        }
        assert_eq!(
            super::redact_secrets("DROP TABLE users; rm -rf /var/lib/app"),
            "DROP TABLE users; rm -rf /var/lib/app"
        );
    }

    #[test]
    fn excerpts_are_bounded_and_hashed() {
        let long = format!(
            "psql -c 'TRUNCATE t' postgres://u:pw@h/db {}",
            "x".repeat(100_000)
        );
        let (e, h) = super::command_excerpt(&long, 200);
        assert!(e.chars().count() <= 201);
        assert!(!e.contains(":pw@"));
        assert_eq!(h.len(), 64);
    }

    #[test]
    fn every_secret_pattern_compiles() {
        for (re, _) in super::SECRET_PATTERNS {
            assert!(regex_lite::Regex::new(re).is_ok(), "{re}");
        }
    }
}
