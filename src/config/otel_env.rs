//! The standard OpenTelemetry environment variables (`OTEL_*`), applied over the `export:`
//! section: read by `main` at start (components never read the environment), each bad value
//! an error that names its variable.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use super::{
    ConfigError,
    export::{
        Compression, ExportConfig, Protocol, SignalKind, SignalOverride, TemporalityPreference,
        check_endpoint, check_headers,
    },
};

/// Parses a W3C Baggage-style `key1=value1,key2=value2` list (OTEL_RESOURCE_ATTRIBUTES,
/// OTEL_EXPORTER_OTLP_HEADERS): values are percent-decoded, blanks around items ignored.
pub fn parse_key_values(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not key=value"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{item:?} has an empty key"));
        }
        out.insert(key.to_string(), percent_decode(value.trim())?);
    }
    Ok(out)
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{text:?} has a bad %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

/// Applies the standard OpenTelemetry environment variables that are set in `env`. An
/// error names the variable.
pub fn apply_otel_env(
    export: &mut ExportConfig,
    env: &HashMap<String, String>,
) -> Result<(), ConfigError> {
    let bad = |var: &str, message: String| ConfigError::Env {
        var: var.to_string(),
        message,
    };
    let get = |var: &str| env.get(var).map(String::as_str).filter(|v| !v.is_empty());

    if let Some(v) = get("OTEL_SDK_DISABLED") {
        export.sdk_disabled = parse_bool(v).map_err(|m| bad("OTEL_SDK_DISABLED", m))?;
    }
    // The whole exporter's settings, then each signal's own (which win).
    let found = read_layer("OTEL_EXPORTER_OTLP", &get)?;
    let otlp = &mut export.otlp;
    otlp.endpoint = found.endpoint.or(otlp.endpoint.take());
    otlp.protocol = found.protocol.unwrap_or(otlp.protocol);
    if let Some(h) = found.headers {
        otlp.headers.extend(h);
    }
    otlp.timeout_ms = found.timeout_ms.unwrap_or(otlp.timeout_ms);
    otlp.compression = found.compression.unwrap_or(otlp.compression);
    otlp.certificate = found.certificate.or(otlp.certificate.take());
    otlp.client_certificate = found.client_certificate.or(otlp.client_certificate.take());
    otlp.client_key = found.client_key.or(otlp.client_key.take());
    for signal in SignalKind::ALL {
        let prefix = format!("OTEL_EXPORTER_OTLP_{}", signal.env_infix());
        let found = read_layer(&prefix, &get)?;
        let own = otlp.signal_mut(signal);
        *own = SignalOverride {
            endpoint: found.endpoint.or(own.endpoint.take()),
            protocol: found.protocol.or(own.protocol),
            headers: found.headers.or(own.headers.take()),
            timeout_ms: found.timeout_ms.or(own.timeout_ms),
            compression: found.compression.or(own.compression),
            certificate: found.certificate.or(own.certificate.take()),
            client_certificate: found.client_certificate.or(own.client_certificate.take()),
            client_key: found.client_key.or(own.client_key.take()),
        };
    }
    if let Some(v) = get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE") {
        export.metric_temporality = TemporalityPreference::parse(v)
            .map_err(|m| bad("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", m))?;
    }
    if let Some(v) = get("OTEL_METRIC_EXPORT_INTERVAL") {
        let ms = parse_millis(v).map_err(|m| bad("OTEL_METRIC_EXPORT_INTERVAL", m))?;
        if ms < 100 {
            return Err(bad(
                "OTEL_METRIC_EXPORT_INTERVAL",
                format!("{ms} is less than 100 ms"),
            ));
        }
        export.metric_interval_ms = ms;
    }
    if let Some(v) = get("OTEL_RESOURCE_ATTRIBUTES") {
        let attrs = parse_key_values(v).map_err(|m| bad("OTEL_RESOURCE_ATTRIBUTES", m))?;
        export.resource_attributes.extend(attrs);
    }
    for signal in SignalKind::ALL {
        let name = format!("OTEL_{}_EXPORTER", signal.env_infix());
        if let Some(v) = get(&name) {
            let on = match v.trim() {
                "none" => false,
                "otlp" => true,
                other => {
                    return Err(bad(
                        &name,
                        format!(
                            "{other:?}: only otlp or none (choose exporters with --exporter or export.exporters)"
                        ),
                    ));
                }
            };
            export.signals.set(signal, on);
        }
    }
    if let Some(v) = get("OTEL_SERVICE_NAME") {
        export.agent_service_name = v.to_string();
    }
    // The semconv migration switch: `rpc/dup` asks for both generations of RPC attributes.
    if let Some(v) = get("OTEL_SEMCONV_STABILITY_OPT_IN")
        && v.split(',').any(|c| c.trim() == "rpc/dup")
    {
        export.rpc_legacy_attributes = true;
    }
    Ok(())
}

/// What one layer of the OTLP exporter's variables sets (`OTEL_EXPORTER_OTLP_*`, or one
/// signal's `OTEL_EXPORTER_OTLP_TRACES_*`...), each value checked.
fn read_layer<'v>(
    prefix: &str,
    get: &impl Fn(&str) -> Option<&'v str>,
) -> Result<SignalOverride, ConfigError> {
    let mut found = SignalOverride::default();
    let var = |suffix: &str| format!("{prefix}_{suffix}");
    let bad = |var: &str, message: String| ConfigError::Env {
        var: var.to_string(),
        message,
    };
    // INSECURE only says which scheme an endpoint written without one gets (gRPC's
    // `host:port`): http:// when true, else https://, as the specification has it.
    let name = var("INSECURE");
    let insecure = match get(&name) {
        Some(v) => parse_bool(v).map_err(|m| bad(&name, m))?,
        None => false,
    };
    let name = var("ENDPOINT");
    if let Some(v) = get(&name) {
        let v = match (v.contains("://"), insecure) {
            (true, _) => v.to_string(),
            (false, true) => format!("http://{v}"),
            (false, false) => format!("https://{v}"),
        };
        check_endpoint(Some(&v)).map_err(|m| bad(&name, m))?;
        found.endpoint = Some(v);
    }
    let name = var("PROTOCOL");
    if let Some(v) = get(&name) {
        found.protocol = Some(Protocol::parse(v).map_err(|m| bad(&name, m))?);
    }
    let name = var("HEADERS");
    if let Some(v) = get(&name) {
        let headers = parse_key_values(v)
            .and_then(|h| check_headers(&h).map(|()| h))
            .map_err(|m| bad(&name, m))?;
        found.headers = Some(headers);
    }
    let name = var("TIMEOUT");
    if let Some(v) = get(&name) {
        found.timeout_ms = Some(parse_millis(v).map_err(|m| bad(&name, m))?);
    }
    let name = var("COMPRESSION");
    if let Some(v) = get(&name) {
        found.compression = Some(Compression::parse(v).map_err(|m| bad(&name, m))?);
    }
    for (suffix, path) in [
        ("CERTIFICATE", &mut found.certificate),
        ("CLIENT_CERTIFICATE", &mut found.client_certificate),
        ("CLIENT_KEY", &mut found.client_key),
    ] {
        if let Some(v) = get(&var(suffix)) {
            *path = Some(PathBuf::from(v));
        }
    }
    Ok(found)
}

/// An OpenTelemetry boolean variable: `true` or `false`, any case. (The specification reads
/// anything else as false with a warning; netsonde refuses it, so a typo is not silently
/// the opposite of what was meant.)
fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{text:?} is not true or false")),
    }
}

fn parse_millis(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1 (milliseconds)".into()),
        Ok(ms) => Ok(ms),
        Err(_) => Err(format!("{text:?} is not a whole number of milliseconds")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{export::Signals, tests::env};

    #[test]
    fn the_standard_variables_apply_and_per_signal_ones_win() {
        let mut c = ExportConfig::default();
        apply_otel_env(
            &mut c,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://10.0.0.1:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b, tenant=t1"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://10.0.0.2:4317"),
                ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "x=1"),
                ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment.name=prod",
                ),
                ("OTEL_SERVICE_NAME", "netsonde-node-a"),
                ("OTEL_SEMCONV_STABILITY_OPT_IN", "http,rpc/dup"),
                ("OTEL_LOGS_EXPORTER", "none"),
                ("OTEL_TRACES_EXPORTER", "otlp"),
            ]),
        )
        .unwrap();
        c.validate().unwrap();
        let metrics = c.otlp.target(SignalKind::Metrics);
        assert_eq!(metrics.endpoint, "http://10.0.0.1:4318/v1/metrics");
        assert_eq!(metrics.protocol, Protocol::HttpProtobuf);
        assert_eq!(
            metrics.headers,
            [
                ("api-key".into(), "a b".into()),
                ("tenant".into(), "t1".into())
            ]
        );
        assert_eq!(metrics.timeout, Duration::from_millis(2500));
        assert_eq!(metrics.compression, Compression::Gzip);
        let traces = c.otlp.target(SignalKind::Traces);
        assert_eq!(
            (traces.endpoint.as_str(), traces.protocol),
            ("http://10.0.0.2:4317", Protocol::Grpc)
        );
        assert_eq!(
            c.otlp.target(SignalKind::Logs).headers,
            [("x".into(), "1".into())]
        );
        assert_eq!(c.metric_temporality, TemporalityPreference::Delta);
        assert_eq!(c.metric_interval_ms, 5000);
        assert_eq!(c.resource_attributes["deployment.environment.name"], "prod");
        assert_eq!(c.agent_service_name, "netsonde-node-a");
        assert!(c.rpc_legacy_attributes);
        assert_eq!(
            c.signals,
            Signals {
                traces: true,
                metrics: true,
                logs: false
            }
        );
    }

    #[test]
    fn a_bad_variable_is_named() {
        let cases = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "yes"),
            ("OTEL_SDK_DISABLED", "1"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "bad name=1"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "ftp://x"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                "sometimes",
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL", "10"),
            ("OTEL_RESOURCE_ATTRIBUTES", "a=%zz"),
            ("OTEL_TRACES_EXPORTER", "jaeger"),
        ];
        for (var, value) in cases {
            let err =
                apply_otel_env(&mut ExportConfig::default(), &env(&[(var, value)])).expect_err(var);
            assert!(
                err.to_string()
                    .starts_with(&format!("environment variable {var}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn an_endpoint_without_a_scheme_is_secure_unless_insecure_says_not() {
        for (vars, expected) in [
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317")],
                "https://c:4317",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317"),
                    ("OTEL_EXPORTER_OTLP_INSECURE", "TRUE"),
                ],
                "http://c:4317",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
                    ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
                ],
                "https://c:4317",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "t:4317"),
                    ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true"),
                    ("OTEL_EXPORTER_OTLP_INSECURE", "false"),
                ],
                "http://t:4317",
            ),
        ] {
            let mut export = ExportConfig::default();
            apply_otel_env(&mut export, &env(&vars)).unwrap();
            let target = export.otlp.target(SignalKind::Traces);
            assert_eq!(target.endpoint, expected, "{vars:?}");
        }
    }

    #[test]
    fn client_certificates_apply_per_signal_and_need_their_key() {
        let mut export = ExportConfig::default();
        let vars = env(&[
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem"),
            ("OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE", "/logs.pem"),
            ("OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", "/logs-key.pem"),
        ]);
        apply_otel_env(&mut export, &vars).unwrap();
        export.validate().unwrap();
        let identity = |s| export.otlp.target(s).client_identity.unwrap();
        assert_eq!(
            identity(SignalKind::Traces).certificate,
            PathBuf::from("/c.pem")
        );
        assert_eq!(
            identity(SignalKind::Logs).key,
            PathBuf::from("/logs-key.pem")
        );
        let mut half = ExportConfig::default();
        apply_otel_env(
            &mut half,
            &env(&[("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")]),
        )
        .unwrap();
        let err = half.validate().unwrap_err().to_string();
        assert!(err.contains("export.otlp.client_certificate"), "{err}");
        assert!(err.contains("no client certificate"), "{err}");
    }

    #[test]
    fn sdk_disabled_turns_off_the_opentelemetry_exporters_only() {
        use crate::config::export::ExporterKind;
        let mut export = ExportConfig {
            exporters: vec![
                ExporterKind::Console,
                ExporterKind::Otlp,
                ExporterKind::File,
            ],
            ..ExportConfig::default()
        };
        apply_otel_env(&mut export, &env(&[("OTEL_SDK_DISABLED", "true")])).unwrap();
        assert!(export.enabled(ExporterKind::Console));
        assert!(!export.enabled(ExporterKind::Otlp));
        assert!(!export.enabled(ExporterKind::File));
        let mut on = ExportConfig::default();
        apply_otel_env(&mut on, &env(&[("OTEL_SDK_DISABLED", "false")])).unwrap();
        assert!(!on.sdk_disabled);
    }
}
