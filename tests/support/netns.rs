//! Two network namespaces joined by a veth pair: real packets over a real device, with
//! nftables rules to lose some of them, and nothing leaving the machine. Each namespace has
//! its own TCP counters (`nstat`), so each side's retransmits can be checked on their own.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

pub const CLIENT_IP: &str = "10.231.0.1";
pub const SERVER_IP: &str = "10.231.0.2";

/// Why these tests cannot run here, if they cannot: the tools they drive.
pub fn missing_tools() -> Option<String> {
    for (tool, package) in [
        ("ip", "iproute2"),
        ("ss", "iproute2"),
        ("nstat", "iproute2"),
        ("nft", "nftables"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some(format!(
                "`{tool}` is not installed (Debian package {package})"
            ));
        }
    }
    None
}

/// A client and a server namespace, each with `veth0` and a permanent neighbour entry for the
/// other (no ARP), and IPv6 off (no router solicitations on the link). Removed on drop.
pub struct NetPair {
    pub client: String,
    pub server: String,
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl NetPair {
    pub fn create() -> Result<NetPair, String> {
        let id = std::process::id();
        let pair = NetPair {
            client: format!("nsd{id}c"),
            server: format!("nsd{id}s"),
        };
        let (a, b) = (format!("nsd{id}a"), format!("nsd{id}b"));
        for ns in [&pair.client, &pair.server] {
            let _ = run(&["ip", "netns", "del", ns]);
            run(&["ip", "netns", "add", ns])?;
            for key in ["all", "default"] {
                let setting = format!("net.ipv6.conf.{key}.disable_ipv6=1");
                run(&["ip", "netns", "exec", ns, "sysctl", "-qw", &setting])?;
            }
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
        for (dev, ns, ip) in [(&a, &pair.client, CLIENT_IP), (&b, &pair.server, SERVER_IP)] {
            run(&["ip", "link", "set", dev, "netns", ns])?;
            run(&["ip", "-n", ns, "link", "set", dev, "name", "veth0"])?;
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "veth0",
            ])?;
            run(&["ip", "-n", ns, "link", "set", "veth0", "up"])?;
        }
        let mac = |ns: &str| -> Result<String, String> {
            Ok(run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "cat",
                "/sys/class/net/veth0/address",
            ])?
            .trim()
            .to_string())
        };
        let (client_mac, server_mac) = (mac(&pair.client)?, mac(&pair.server)?);
        for (ns, peer, peer_mac) in [
            (&pair.client, SERVER_IP, &server_mac),
            (&pair.server, CLIENT_IP, &client_mac),
        ] {
            run(&[
                "ip",
                "-n",
                ns,
                "neigh",
                "replace",
                peer,
                "lladdr",
                peer_mac,
                "dev",
                "veth0",
                "nud",
                "permanent",
            ])?;
        }
        Ok(pair)
    }

    /// `program args…` inside namespace `ns`.
    pub fn command(&self, ns: &str, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]).args(args);
        cmd
    }

    /// Loads an nftables script into namespace `ns`.
    pub fn nft(&self, ns: &str, script: &str) {
        let mut child = self
            .command(ns, "nft", &["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft rejected:\n{script}");
    }

    /// Packets counted by the `counter` statements of table `inet <table>` in `ns`.
    pub fn nft_counted(&self, ns: &str, table: &str) -> u64 {
        let out = run(&[
            "ip", "netns", "exec", ns, "nft", "list", "table", "inet", table,
        ])
        .unwrap();
        out.split_whitespace()
            .collect::<Vec<_>>()
            .windows(3)
            .filter(|w| w[0] == "counter" && w[1] == "packets")
            .map(|w| w[2].parse::<u64>().unwrap())
            .sum()
    }

    /// The kernel's SNMP counter `name` in namespace `ns` (absolute).
    pub fn nstat(&self, ns: &str, name: &str) -> u64 {
        let out = run(&["ip", "netns", "exec", ns, "nstat", "-asz", name]).unwrap();
        out.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(name)).then(|| f.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("nstat has no {name}:\n{out}"))
    }

    /// TCP connections in `ns`: (state, Send-Q) each.
    pub fn sockets(&self, ns: &str) -> Vec<(String, u64)> {
        run(&["ip", "netns", "exec", ns, "ss", "-Htna"])
            .unwrap()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((f.first()?.to_string(), f.get(2)?.parse().ok()?))
            })
            .collect()
    }

    /// Waits until no connection in either namespace has unacknowledged bytes, so no
    /// retransmit is still to come.
    pub fn wait_until_acked(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let pending: u64 = [&self.client, &self.server]
                .iter()
                .flat_map(|ns| self.sockets(ns))
                // A listener's Send-Q is its backlog.
                .filter(|(state, _)| state != "LISTEN")
                .map(|(_, q)| q)
                .sum();
            if pending == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{pending} bytes still unacknowledged"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.client, &self.server] {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}
