//! Reading the file exporter's OTLP JSON lines in tests: a metric's data points for one
//! workload (by pid), and their sums.

/// The last (cumulative) data points of metric `name` for the workload with `pid`, from the
/// file exporter's OTLP JSON lines.
pub fn points(otlp: &str, pid: u32, name: &str) -> Vec<serde_json::Value> {
    points_of(otlp, ("process.pid", &pid.to_string()), name)
}

/// The data points of metric `name` in the last export, of the resource whose attribute
/// `key` is `value` (a string, or an integer written as one).
pub fn points_of(otlp: &str, resource: (&str, &str), name: &str) -> Vec<serde_json::Value> {
    exports_of(otlp, resource, name).pop().unwrap_or_default()
}

/// The data points of metric `name` in every export of that resource, one after the other:
/// with delta temporality, each is what happened since the export before.
pub fn all_points_of(otlp: &str, resource: (&str, &str), name: &str) -> Vec<serde_json::Value> {
    exports_of(otlp, resource, name).concat()
}

/// The data points of metric `name` of the resource whose attribute `key` is `value`, per
/// export, in the order of the lines.
fn exports_of(otlp: &str, (key, value): (&str, &str), name: &str) -> Vec<Vec<serde_json::Value>> {
    let mut exports = Vec::new();
    for line in otlp.lines() {
        // A serial console may interleave a kernel message with the lines.
        let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        for rm in json["resourceMetrics"].as_array().into_iter().flatten() {
            let matches = rm["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| {
                    let v = &a["value"];
                    a["key"] == key
                        && (v["stringValue"].as_str() == Some(value)
                            || v["intValue"].as_str() == Some(value)
                            || v["intValue"].as_u64().map(|n| n.to_string()).as_deref()
                                == Some(value))
                });
            if !matches {
                continue;
            }
            for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    if m["name"] == name {
                        let data = m.get("sum").or_else(|| m.get("histogram")).unwrap();
                        exports.push(data["dataPoints"].as_array().unwrap().clone());
                    }
                }
            }
        }
    }
    exports
}

/// The OTLP JSON attribute `key` of `attributes`, as a string (64-bit ints are strings in
/// OTLP JSON).
pub fn attr(attributes: &serde_json::Value, key: &str) -> Option<String> {
    let a = attributes.as_array()?.iter().find(|a| a["key"] == key)?;
    let v = &a["value"];
    v["stringValue"]
        .as_str()
        .map(str::to_string)
        .or_else(|| v["intValue"].as_str().map(str::to_string))
        .or_else(|| v["intValue"].as_i64().map(|i| i.to_string()))
}

fn number(v: &serde_json::Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0.0)
}

/// Sum of a counter's points whose attributes include `key=value` (all points for `None`).
pub fn counted(points: &[serde_json::Value], filter: Option<(&str, &str)>) -> u64 {
    points
        .iter()
        .filter(|p| {
            filter.is_none_or(|(k, v)| {
                p["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|a| a["key"] == k && a["value"]["stringValue"] == v)
            })
        })
        .map(|p| number(&p["asInt"]) as u64)
        .sum()
}

/// (count, sum) of a histogram's points.
pub fn histogram(points: &[serde_json::Value]) -> (u64, f64) {
    points.iter().fold((0, 0.0), |(c, s), p| {
        (c + number(&p["count"]) as u64, s + number(&p["sum"]))
    })
}
