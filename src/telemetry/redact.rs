//! The one redaction rule every output goes through: an exchange's request target and kept
//! headers are redacted when the record is made ([`super::ExchangeRecord::from_observed`]),
//! before any exporter sees it, so the console, the file and OTLP cannot disagree.
//!
//! What is never captured at all (Authorization, Cookie, every header outside the parsers'
//! short list, bodies) needs no rule: it never reaches user space's records.

use crate::{config::RedactionConfig, protocols::Header};

/// What replaces a redacted value.
pub const REDACTED: &str = "REDACTED";

/// The rule, built once from the config.
#[derive(Debug, Clone)]
pub struct Redaction {
    /// Lower-case query keys whose values are replaced.
    query_keys: Vec<String>,
    /// Lower-case header names whose values are replaced.
    headers: Vec<String>,
    show_everything: bool,
}

impl Redaction {
    pub fn new(config: &RedactionConfig) -> Self {
        Redaction {
            query_keys: config
                .query_keys
                .iter()
                .map(|k| k.to_ascii_lowercase())
                .collect(),
            headers: config
                .headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            show_everything: config.show_everything,
        }
    }

    /// The request target with the values of sensitive query keys replaced (in place, and
    /// only when something is to be replaced: most targets have no query).
    pub fn target(&self, target: &mut String) {
        if self.show_everything {
            return;
        }
        let Some(start) = target.find('?') else {
            return;
        };
        let end = target[start..]
            .find('#')
            .map_or(target.len(), |i| start + i);
        let query = &target[start + 1..end];
        if !query.split('&').any(|pair| self.sensitive_pair(pair)) {
            return;
        }
        let redacted = self.query(query);
        target.replace_range(start + 1..end, &redacted);
    }

    /// A query (without `?`) with sensitive values replaced.
    fn query(&self, query: &str) -> String {
        if self.show_everything {
            return query.to_string();
        }
        let mut out = String::with_capacity(query.len());
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if self.sensitive_key(key) => {
                    out.push_str(key);
                    out.push('=');
                    out.push_str(REDACTED);
                }
                _ => out.push_str(pair),
            }
        }
        out
    }

    /// Kept headers (lower-case names) with sensitive values replaced.
    pub fn headers(&self, headers: &mut [Header]) {
        if self.show_everything || self.headers.is_empty() {
            return;
        }
        for (name, value) in headers {
            if self.headers.iter().any(|h| h == name) {
                *value = REDACTED.to_string();
            }
        }
    }

    fn sensitive_pair(&self, pair: &str) -> bool {
        pair.split_once('=')
            .is_some_and(|(key, _)| self.sensitive_key(key))
    }

    /// Keys compare case-insensitively and after percent-decoding (`api%5Fkey` is `api_key`).
    fn sensitive_key(&self, key: &str) -> bool {
        let decoded = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
        self.query_keys
            .iter()
            .any(|k| k.eq_ignore_ascii_case(decoded.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Redaction {
        Redaction::new(&RedactionConfig::default())
    }

    #[test]
    fn sensitive_query_values_are_replaced() {
        let cases = [
            ("/a", "/a"),
            ("/a?x=1", "/a?x=1"),
            ("/a?token=t", "/a?token=REDACTED"),
            (
                "/a?token=t&password=p&api_key=k&sig=s&x=1",
                "/a?token=REDACTED&password=REDACTED&api_key=REDACTED&sig=REDACTED&x=1",
            ),
            ("/a?TOKEN=t", "/a?TOKEN=REDACTED"),
            ("/a?api%5Fkey=k", "/a?api%5Fkey=REDACTED"),
            ("/a?Signature=abc&b", "/a?Signature=REDACTED&b"),
            // A key without a value has nothing to hide; the fragment stays as it is.
            ("/a?token&x=1#frag", "/a?token&x=1#frag"),
            ("/a?token=t#frag", "/a?token=REDACTED#frag"),
            // Absolute form (proxies).
            (
                "http://h/a?access_token=t",
                "http://h/a?access_token=REDACTED",
            ),
            // A value that contains `=` is still all gone.
            ("/a?secret=a=b&c=d", "/a?secret=REDACTED&c=d"),
        ];
        let r = rule();
        for (input, want) in cases {
            let mut t = input.to_string();
            r.target(&mut t);
            assert_eq!(t, want, "{input}");
        }
    }

    #[test]
    fn the_config_names_keys_and_headers_and_can_show_everything() {
        let config = RedactionConfig {
            query_keys: vec!["session".into()],
            headers: vec!["X-Forwarded-For".into()],
            show_everything: false,
        };
        let r = Redaction::new(&config);
        let mut t = "/a?session=s&token=t".to_string();
        r.target(&mut t);
        assert_eq!(t, "/a?session=REDACTED&token=t");
        let mut headers = vec![
            ("x-forwarded-for".into(), "1.2.3.4".to_string()),
            ("host".into(), "web".to_string()),
        ];
        r.headers(&mut headers);
        assert_eq!(headers[0].1, "REDACTED");
        assert_eq!(headers[1].1, "web");

        let open = Redaction::new(&RedactionConfig {
            show_everything: true,
            ..config
        });
        let mut t = "/a?session=s".to_string();
        open.target(&mut t);
        assert_eq!(t, "/a?session=s");
        let mut headers = vec![("x-forwarded-for".into(), "1.2.3.4".to_string())];
        open.headers(&mut headers);
        assert_eq!(headers[0].1, "1.2.3.4");
    }
}
