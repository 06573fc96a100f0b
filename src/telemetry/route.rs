//! Low-cardinality route templates from raw paths, for metric attributes and span names.
//!
//! netsonde sees paths, not the server framework's routes, so it guesses: a path segment
//! that looks like an identifier (a number, a UUID, a hex id, a long opaque token) becomes
//! `{id}`. Each workload keeps at most a configured number of distinct templates; beyond that
//! every new one is reported as [`OVERFLOW`], so a path with an unforeseen kind of id can never
//! blow up a metric's cardinality.

use foldhash::HashSet;

/// The placeholder for an identifier segment.
pub const ID: &str = "{id}";
/// The route reported once a workload has used up its templates.
pub const OVERFLOW: &str = "{overflow}";
/// Segments kept; deeper paths end in `/…`.
const MAX_SEGMENTS: usize = 8;
/// Longest segment kept as is; longer ones are treated as identifiers.
const MAX_SEGMENT: usize = 48;

/// The template of a request target (its query and fragment are ignored).
pub fn template(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    // An absolute-form target (a request to a proxy) carries scheme and host: drop them.
    let path = match path.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => path,
    };
    if !path.starts_with('/') {
        // `*` (OPTIONS) or an authority (CONNECT): no path to template.
        return path.to_string();
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').skip(1).enumerate() {
        if i == MAX_SEGMENTS {
            out.push_str("/…");
            break;
        }
        out.push('/');
        if is_identifier(segment) {
            out.push_str(ID);
        } else {
            out.push_str(segment);
        }
    }
    out
}

fn is_identifier(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    let digits = segment.bytes().filter(u8::is_ascii_digit).count();
    if digits == segment.len() || segment.len() > MAX_SEGMENT {
        return true;
    }
    if is_uuid(segment) {
        return true;
    }
    // A hex id (a hash, an object id): long enough not to be a word, with at least one digit.
    if segment.len() >= 8 && digits > 0 && segment.bytes().all(|b| b.is_ascii_hexdigit()) {
        return true;
    }
    // An opaque token: long, and mixing letters with several digits.
    segment.len() >= 16
        && digits >= 3
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// One workload's templates, capped.
#[derive(Debug, Default)]
pub struct Routes {
    seen: HashSet<String>,
}

impl Routes {
    /// The template for `target`, or [`OVERFLOW`] when it would be template number `cap + 1`.
    pub fn route(&mut self, target: &str, cap: usize) -> String {
        let t = template(target);
        if self.seen.contains(&t) {
            return t;
        }
        if self.seen.len() >= cap {
            return OVERFLOW.to_string();
        }
        self.seen.insert(t.clone());
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_become_placeholders() {
        for (target, expected) in [
            ("/", "/"),
            ("/users/42", "/users/{id}"),
            ("/users/42/orders/7?x=1", "/users/{id}/orders/{id}"),
            ("/o/3f2504e0-4f89-11d3-9a0c-0305e82c3301", "/o/{id}"),
            ("/blob/9f86d081884c7d65", "/blob/{id}"),
            ("/api/v2/items", "/api/v2/items"),
            ("/static/app.js", "/static/app.js"),
            ("/deadbeef", "/deadbeef"),
            ("/t/aZ3kQ9x7Lm2Pq8Rt", "/t/{id}"),
            ("/healthz/", "/healthz/"),
            ("http://example.test/a/1", "/a/{id}"),
            ("*", "*"),
            ("/a/b/c/d/e/f/g/h/i/j", "/a/b/c/d/e/f/g/h/…"),
        ] {
            assert_eq!(template(target), expected, "{target}");
        }
    }

    #[test]
    fn a_workload_gets_at_most_cap_templates() {
        let mut routes = Routes::default();
        assert_eq!(routes.route("/a", 2), "/a");
        assert_eq!(routes.route("/b/1", 2), "/b/{id}");
        assert_eq!(routes.route("/c", 2), OVERFLOW);
        assert_eq!(routes.route("/b/99", 2), "/b/{id}");
        assert_eq!(routes.route("/a?q", 2), "/a");
    }
}
