//! Renders charts/netsonde the way `helm template` does, for tests: Helm cannot be installed
//! on the test machines, so the chart's Go templates run on gtmpl (a Go text/template engine)
//! with the few Helm functions the chart uses (`toYaml`, `nindent`, `indent`, `quote`,
//! `default`), and each rendered object is read into its k8s-openapi type with unknown
//! fields reported: a misspelt or misplaced field fails the test instead of being ignored by
//! the API server.

use std::path::PathBuf;

use gtmpl::{Context, FuncError, Template, Value as Tv};
use serde_json::{Map, Value};

pub const RELEASE: &str = "netsonde";
pub const NAMESPACE: &str = "netsonde";

pub fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/netsonde")
}

/// The plain manifests beside the chart.
pub fn manifests_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/netsonde.yaml")
}

fn yaml(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `base` with `over` merged in, maps deeply (as Helm merges `--set` and `-f` values).
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn to_template(v: &Value) -> Tv {
    match v {
        Value::Null => Tv::Nil,
        Value::Bool(b) => Tv::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Tv::from(i),
            (None, Some(f)) => Tv::from(f),
            _ => Tv::Nil,
        },
        Value::String(s) => Tv::String(s.clone()),
        Value::Array(a) => Tv::Array(a.iter().map(to_template).collect()),
        Value::Object(o) => {
            Tv::Object(o.iter().map(|(k, v)| (k.clone(), to_template(v))).collect())
        }
    }
}

fn from_template(v: &Tv) -> Value {
    match v {
        Tv::Nil | Tv::NoValue | Tv::Function(_) => Value::Null,
        Tv::Bool(b) => Value::Bool(*b),
        Tv::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => n.as_f64().map_or(Value::Null, Value::from),
        },
        Tv::String(s) => Value::String(s.clone()),
        Tv::Array(a) => Value::Array(a.iter().map(from_template).collect()),
        Tv::Object(o) | Tv::Map(o) => {
            // Sorted keys: the same values always render the same text.
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), from_template(&o[k])))
                    .collect::<Map<_, _>>(),
            )
        }
    }
}

fn arg<'a>(args: &'a [Tv], i: usize, name: &str) -> Result<&'a Tv, FuncError> {
    args.get(i)
        .ok_or_else(|| FuncError::Generic(format!("{name}: missing argument {i}")))
}

fn text(v: &Tv) -> String {
    match v {
        Tv::String(s) => s.clone(),
        Tv::Nil | Tv::NoValue => String::new(),
        other => other.to_string(),
    }
}

/// Helm's `toYaml`: YAML without the trailing newline.
fn to_yaml(args: &[Tv]) -> Result<Tv, FuncError> {
    let value = from_template(arg(args, 0, "toYaml")?);
    let out = serde_saphyr::to_string(&value).map_err(|e| FuncError::Generic(e.to_string()))?;
    Ok(Tv::String(out.trim_end_matches('\n').to_string()))
}

fn indent_by(n: &Tv, s: &Tv) -> Result<String, FuncError> {
    let n = match n {
        Tv::Number(n) => n.as_i64().unwrap_or(0) as usize,
        _ => return Err(FuncError::Generic("indent: width is not a number".into())),
    };
    let pad = " ".repeat(n);
    Ok(text(s)
        .split('\n')
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `indent N TEXT`.
fn indent(args: &[Tv]) -> Result<Tv, FuncError> {
    Ok(Tv::String(indent_by(
        arg(args, 0, "indent")?,
        arg(args, 1, "indent")?,
    )?))
}

/// `nindent N TEXT`: a newline, then `indent`.
fn nindent(args: &[Tv]) -> Result<Tv, FuncError> {
    let body = indent_by(arg(args, 0, "nindent")?, arg(args, 1, "nindent")?)?;
    Ok(Tv::String(format!("\n{body}")))
}

/// `quote TEXT`: a double-quoted string.
fn quote(args: &[Tv]) -> Result<Tv, FuncError> {
    Ok(Tv::String(format!("{:?}", text(arg(args, 0, "quote")?))))
}

/// `default DEFAULT VALUE`: VALUE unless it is empty.
fn default(args: &[Tv]) -> Result<Tv, FuncError> {
    let fallback = arg(args, 0, "default")?;
    let empty = match args.get(1) {
        None | Some(Tv::Nil | Tv::NoValue) => true,
        Some(Tv::String(s)) => s.is_empty(),
        Some(Tv::Array(a)) => a.is_empty(),
        Some(Tv::Object(o) | Tv::Map(o)) => o.is_empty(),
        Some(Tv::Bool(b)) => !b,
        Some(_) => false,
    };
    Ok(if empty {
        fallback.clone()
    } else {
        args[1].clone()
    })
}

/// One rendered object: the template it came from and its YAML text.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub template: String,
    pub text: String,
}

/// `helm template netsonde charts/netsonde --namespace netsonde` with `overrides` merged into
/// the chart's values.
pub fn render(overrides: &Value) -> Vec<Rendered> {
    let dir = chart_dir();
    let chart = yaml(dir.join("Chart.yaml"));
    let mut values = yaml(dir.join("values.yaml"));
    merge(&mut values, overrides);
    let context = serde_json::json!({
        "Values": values,
        "Release": {"Name": RELEASE, "Namespace": NAMESPACE, "Service": "Helm"},
        "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
    });
    let context = Context::from(to_template(&context));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let name = format!(
            "netsonde/templates/{}",
            file.file_name().unwrap().to_string_lossy()
        );
        let mut template = Template::default();
        template.add_funcs(&[
            ("toYaml", to_yaml as gtmpl::Func),
            ("nindent", nindent as gtmpl::Func),
            ("indent", indent as gtmpl::Func),
            ("quote", quote as gtmpl::Func),
            ("default", default as gtmpl::Func),
        ]);
        template
            .parse(std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = template
            .render(&context)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for doc in text.split("\n---\n") {
            let body: Vec<&str> = doc
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect();
            if body.iter().all(|l| l.trim().is_empty()) {
                continue;
            }
            out.push(Rendered {
                template: name.clone(),
                text: doc.trim_matches('\n').to_string(),
            });
        }
    }
    out
}

/// The rendering as one multi-document YAML file, as `helm template` prints it.
pub fn as_manifest(rendered: &[Rendered]) -> String {
    let mut out = String::from(
        "# netsonde for clusters without Helm: charts/netsonde rendered with its default values\n\
         # (release and namespace `netsonde`). Create the namespace, set your collector's\n\
         # endpoint in the ConfigMap, then `kubectl apply -f` this file. Generated by\n\
         # `NETSONDE_UPDATE_DOCS=1 cargo test --test chart`; do not edit.\n",
    );
    for r in rendered {
        out.push_str(&format!("---\n# Source: {}\n{}\n", r.template, r.text));
    }
    out
}

/// Reads YAML text as a `K`, listing every field `K` does not have.
pub fn typed<K: serde::de::DeserializeOwned>(text: &str) -> Result<K, String> {
    let value: Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    let mut unknown = Vec::new();
    let typed = serde_ignored::deserialize(value, |path| unknown.push(path.to_string()))
        .map_err(|e: serde_json::Error| e.to_string())?;
    if unknown.is_empty() {
        Ok(typed)
    } else {
        Err(format!("unknown fields: {}", unknown.join(", ")))
    }
}
