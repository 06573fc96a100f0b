//! A real Apache SkyWalking OAP for the tests: the release of tests/support/oap/pom.xml, its jars
//! from Maven Central (tests/oap.sh), with its JDBC storage on a PostgreSQL (Debian's) of its
//! own, both on loopback, both stopped and their files removed when dropped. OAP runs with
//! tests/support/oap/config and the rules users copy, otel-config/skywalking, on its
//! classpath, takes OTLP metrics on its gRPC port and answers GraphQL (and MQE through it) on
//! its REST port.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};

use super::{free_port, support_file};

/// How often OAP writes what it aggregated to storage (seconds): its default is 25.
const PERSIST_SECONDS: u64 = 2;

pub struct Oap {
    dir: tempfile::TempDir,
    postgres_bin: PathBuf,
    oap: Child,
    pub grpc_port: u16,
    pub rest_port: u16,
    /// When OAP was started (seconds since the epoch, UTC): no data can be older.
    started: u64,
}

impl Oap {
    /// Starts PostgreSQL and OAP and waits until OAP answers GraphQL. The reason when either
    /// cannot run here, for the test to say why it skips.
    pub fn start() -> Result<Oap, String> {
        let lib = oap_lib()?;
        let postgres_bin = postgres_bin()?;
        Command::new("java")
            .arg("-version")
            .output()
            .map_err(|e| format!("OAP needs Java: {e}"))?;
        let started = epoch_seconds(SystemTime::now());
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        // PostgreSQL runs as its own user, which must reach its data directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let pg_port = start_postgres(&postgres_bin, dir.path())?;
        let (grpc_port, rest_port) = (free_port(), free_port());
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let classpath = [
            support_file("oap/config"),
            root.join("otel-config/skywalking"),
            lib.join("*"),
        ]
        .map(|p| p.display().to_string())
        .join(":");
        let log = std::fs::File::create(dir.path().join("oap.log")).map_err(|e| e.to_string())?;
        let oap = Command::new("java")
            .args(["-Xms256m", "-Xmx1g", "-cp", &classpath])
            .arg("org.apache.skywalking.oap.server.starter.OAPServerStartUp")
            .env("SW_CORE_GRPC_PORT", grpc_port.to_string())
            .env("SW_CORE_REST_PORT", rest_port.to_string())
            .env(
                "SW_JDBC_URL",
                format!("jdbc:postgresql://127.0.0.1:{pg_port}/skywalking"),
            )
            .env("SW_CORE_PERSISTENT_PERIOD", PERSIST_SECONDS.to_string())
            .env("SW_SERVICE_CACHE_REFRESH_INTERVAL", "1")
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting OAP: {e}"))?;
        let mut server = Oap {
            dir,
            postgres_bin,
            oap,
            grpc_port,
            rest_port,
            started,
        };
        server.wait_ready();
        Ok(server)
    }

    /// OAP's OTLP (gRPC) endpoint.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// The time range for OAP's queries, in minutes of the machine's time zone (OAP's too): from
    /// the minute OAP started to the next one. It must not begin earlier: OAP 10.1 on JDBC
    /// storage keeps its tables per day, from the day it starts on, and a range that reaches
    /// back into a day without tables answers nothing at all (seen when the range began ten
    /// minutes back: just after midnight, an empty topology and only null values, with the
    /// data in storage).
    pub fn query_window(&self) -> Value {
        let minute = |seconds: u64| {
            let out = Command::new("date")
                .args(["-d", &format!("@{seconds}"), "+%Y-%m-%d %H%M"])
                .output()
                .expect("date");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let next_minute = epoch_seconds(SystemTime::now()) + 60;
        json!({ "start": minute(self.started), "end": minute(next_minute), "step": "MINUTE" })
    }

    /// Long enough for what OAP took in to be aggregated and written to storage.
    pub fn persist_wait(&self) -> Duration {
        Duration::from_secs(2 * PERSIST_SECONDS + 1)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            if let Ok(Some(status)) = self.oap.try_wait() {
                panic!("OAP exited ({status}): {}", self.log_tail());
            }
            if let Ok(answer) = self.try_graphql("{ version }", json!({}))
                && answer["data"]["version"].is_string()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "OAP not ready after 240 s: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn try_graphql(&self, query: &str, variables: Value) -> Result<Value, String> {
        let body = json!({ "query": query, "variables": variables }).to_string();
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "30",
                "-H",
                "content-type: application/json",
            ])
            .args(["--data-binary", &body])
            .arg(format!("http://127.0.0.1:{}/graphql", self.rest_port))
            .output()
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "{e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// A GraphQL query's `data`; panics on errors (with OAP's answer).
    pub fn graphql(&self, query: &str, variables: Value) -> Value {
        let answer = self
            .try_graphql(query, variables)
            .unwrap_or_else(|e| panic!("OAP's GraphQL: {e}"));
        assert!(
            answer["errors"].is_null(),
            "OAP's GraphQL answered {answer} to {query}"
        );
        answer["data"].clone()
    }

    /// The last lines of OAP's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("oap.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// OAP's log lines that say a rule failed or a metric was refused.
    pub fn errors(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("oap.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" ERROR "))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Oap {
    fn drop(&mut self) {
        let _ = self.oap.kill();
        let _ = self.oap.wait();
        let data = self.dir.path().join("postgres/data");
        let _ = as_postgres(&self.postgres_bin.join("pg_ctl"))
            .args(["-D", &data.display().to_string(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The OAP release tests/support/oap/pom.xml pins (its `skywalking.version`).
fn oap_version() -> String {
    let pom = std::fs::read_to_string(support_file("oap/pom.xml")).expect("the OAP pom");
    let (_, after) = pom
        .split_once("<skywalking.version>")
        .expect("skywalking.version in the OAP pom");
    after
        .split_once('<')
        .expect("a closed element")
        .0
        .trim()
        .to_string()
}

/// OAP's jars, fetched by tests/oap.sh (once: it finds them the second time) into the
/// directory it names after the pom's version.
fn oap_lib() -> Result<PathBuf, String> {
    let version = oap_version();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("oap-{version}"));
    if !dir.join("complete").exists() {
        let fetch = Command::new("bash")
            .arg(support_file("../oap.sh"))
            .output()
            .map_err(|e| format!("fetching OAP: {e}"))?;
        if !fetch.status.success() {
            return Err(format!(
                "fetching OAP {version} from Maven Central failed: {}",
                String::from_utf8_lossy(&fetch.stderr)
            ));
        }
    }
    Ok(dir.join("lib"))
}

/// The directory of PostgreSQL's server programs (Debian's `postgresql` package).
fn postgres_bin() -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "PostgreSQL's server is not installed (Debian package postgresql)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "PostgreSQL's initdb is not installed".to_string())
}

/// A command run as the `postgres` user (PostgreSQL refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

/// A PostgreSQL cluster in `dir/postgres` on a free loopback port, with OAP's database; the
/// port. No durability: the data outlives no test.
fn start_postgres(bin: &Path, dir: &Path) -> Result<u16, String> {
    let home = dir.join("postgres");
    std::fs::create_dir(&home).map_err(|e| e.to_string())?;
    let chown = Command::new("chown")
        .args(["postgres:", &home.display().to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    if !chown.success() {
        return Err("no postgres user to run PostgreSQL as".into());
    }
    let data = home.join("data").display().to_string();
    let run = |command: &mut Command, what: &str| -> Result<(), String> {
        let out = command.output().map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    run(
        as_postgres(&bin.join("initdb")).args([
            "-D",
            &data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]),
        "initdb",
    )?;
    let port = free_port();
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off",
        home.display()
    );
    run(
        as_postgres(&bin.join("pg_ctl")).args([
            "-D",
            &data,
            "-o",
            &options,
            "-l",
            &home.join("log").display().to_string(),
            "-w",
            "start",
        ]),
        "starting PostgreSQL",
    )?;
    run(
        as_postgres(&bin.join("createdb")).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "skywalking",
        ]),
        "creating OAP's database",
    )?;
    Ok(port)
}

fn epoch_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs()
}
