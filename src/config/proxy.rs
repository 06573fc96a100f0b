//! Proxies between netsonde and its collector: `export.otlp.proxy`, and the variables curl,
//! Go programs and the Collector read (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`,
//! `NO_PROXY`, upper case first, then lower case), applied by `main` at start.

use std::collections::HashMap;

use serde::Deserialize;

use super::ConfigError;

/// Which proxy the OTLP exporter goes through, by the endpoint's scheme.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Proxy for `http://` endpoints (`http://[user:password@]host:port`).
    pub http: Option<String>,
    /// Proxy for `https://` endpoints (reached with HTTP CONNECT; TLS goes through it).
    pub https: Option<String>,
    /// Endpoints reached directly: comma-separated host names (each covers its
    /// subdomains), IP addresses or networks (`10.0.0.0/8`), or `*` for all.
    pub no_proxy: Option<String>,
}

impl ProxyConfig {
    /// Checks each proxy URL; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, url) in [
            ("export.otlp.proxy.http", &self.http),
            ("export.otlp.proxy.https", &self.https),
        ] {
            if let Some(url) = url {
                check_proxy_url(url).map_err(|message| ConfigError::Invalid { key, message })?;
            }
        }
        Ok(())
    }

    /// The proxy for `endpoint`'s scheme, before `no_proxy` is consulted.
    pub fn for_scheme(&self, endpoint: &str) -> Option<&str> {
        if endpoint.starts_with("https://") {
            self.https.as_deref()
        } else {
            self.http.as_deref()
        }
    }
}

/// Only plain `http://` proxies (what HTTP CONNECT and forwarding need); a URL without a
/// scheme is taken as `http://`, as curl and Go do.
pub fn check_proxy_url(url: &str) -> Result<(), String> {
    let full = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let uri: http::Uri = full
        .parse()
        .map_err(|e| format!("{:?} is not a URL: {e}", redact_userinfo(url)))?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        Some("http") => Err(format!("{:?} has no host", redact_userinfo(url))),
        Some(other) => Err(format!(
            "{:?}: {other}:// proxies are not supported, only http:// (the collector's TLS, if any, goes through it)",
            redact_userinfo(url)
        )),
        None => Err(format!("{:?} is not a URL", redact_userinfo(url))),
    }
}

/// `url` without its password, for messages and logs.
pub fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let prefix = if scheme.is_empty() {
                String::new()
            } else {
                format!("{scheme}://")
            };
            format!("{prefix}{user}:***@{host}{}", &rest[authority_end..])
        }
        None => url.to_string(),
    }
}

/// Applies the proxy variables set (and not empty) in `env` over `proxy`; `ALL_PROXY`
/// stands for whichever of the two is still unset. An error names the variable.
pub fn apply_proxy_env(
    proxy: &mut ProxyConfig,
    env: &HashMap<String, String>,
) -> Result<(), ConfigError> {
    let first = |names: [&'static str; 2]| {
        names.into_iter().find_map(|name| {
            env.get(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (name, v.trim().to_string()))
        })
    };
    let checked = |found: Option<(&'static str, String)>| -> Result<Option<String>, ConfigError> {
        match found {
            Some((name, url)) => {
                check_proxy_url(&url).map_err(|message| ConfigError::Env {
                    var: name.into(),
                    message,
                })?;
                Ok(Some(url))
            }
            None => Ok(None),
        }
    };
    if let Some(url) = checked(first(["HTTP_PROXY", "http_proxy"]))? {
        proxy.http = Some(url);
    }
    if let Some(url) = checked(first(["HTTPS_PROXY", "https_proxy"]))? {
        proxy.https = Some(url);
    }
    if let Some(url) = checked(first(["ALL_PROXY", "all_proxy"]))? {
        proxy.http.get_or_insert_with(|| url.clone());
        proxy.https.get_or_insert(url);
    }
    if let Some((_, list)) = first(["NO_PROXY", "no_proxy"]) {
        proxy.no_proxy = Some(list);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn proxy_urls() {
        for (url, ok) in [
            ("http://proxy:3128", true),
            ("proxy.corp:8080", true),
            ("http://user:pass@10.0.0.1:3128", true),
            ("https://proxy:443", false),
            ("socks5://proxy:1080", false),
            ("http://", false),
            ("http://a b", false),
        ] {
            assert_eq!(check_proxy_url(url).is_ok(), ok, "{url}");
        }
        let e = check_proxy_url("socks5://me:secret@proxy:1080").unwrap_err();
        assert!(e.contains("only http://") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn passwords_are_hidden() {
        for (url, shown) in [
            ("http://me:secret@proxy:3128", "http://me:***@proxy:3128"),
            ("me:secret@proxy:3128/", "me:***@proxy:3128/"),
            ("http://proxy:3128", "http://proxy:3128"),
            ("http://proxy/a@b", "http://proxy/a@b"),
        ] {
            assert_eq!(redact_userinfo(url), shown);
        }
    }

    #[test]
    fn variables_over_the_file_all_proxy_for_what_is_unset() {
        let mut proxy = ProxyConfig {
            http: Some("http://file:1".into()),
            ..ProxyConfig::default()
        };
        apply_proxy_env(
            &mut proxy,
            &env(&[
                ("https_proxy", "http://lower:2"),
                ("HTTPS_PROXY", "http://upper:2"),
                ("ALL_PROXY", "http://all:3"),
                ("no_proxy", "localhost,.svc"),
            ]),
        )
        .unwrap();
        assert_eq!(
            proxy,
            ProxyConfig {
                http: Some("http://file:1".into()),
                https: Some("http://upper:2".into()),
                no_proxy: Some("localhost,.svc".into()),
            }
        );
        let mut proxy = ProxyConfig::default();
        apply_proxy_env(
            &mut proxy,
            &env(&[("all_proxy", "all:3"), ("HTTP_PROXY", "")]),
        )
        .unwrap();
        assert_eq!(proxy.http.as_deref(), Some("all:3"));
        assert_eq!(proxy.https.as_deref(), Some("all:3"));
        assert_eq!(proxy.for_scheme("https://c:4317"), Some("all:3"));
    }

    #[test]
    fn a_bad_variable_is_named() {
        let e = apply_proxy_env(
            &mut ProxyConfig::default(),
            &env(&[("HTTPS_PROXY", "socks5://p:1080")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("HTTPS_PROXY"), "{e}");
    }
}
