//! tinyproxy (from Debian), a real HTTP proxy with basic authentication, started per test
//! on loopback; its log says what it was asked to forward or tunnel.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use super::{free_port, wait_for_port};

pub struct Tinyproxy {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    pub port: u16,
}

impl Tinyproxy {
    /// A proxy that asks for `user` and `password` (HTTP basic authentication).
    pub fn start(user: &str, password: &str) -> Tinyproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        let config = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Connect\n\
                 MaxClients 50\nAllow 127.0.0.1\nBasicAuth {user} {password}\n",
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy is installed (tests/run.sh installs it)");
        wait_for_port(&format!("127.0.0.1:{port}"));
        Tinyproxy {
            child,
            log,
            _dir: dir,
            port,
        }
    }

    /// The request lines clients sent it (`CONNECT host:port HTTP/1.1`, `POST http://…`).
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("): ").filter(|_| l.contains("Request (")))
            .map(|(_, request)| request.to_string())
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
