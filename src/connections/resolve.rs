//! Asks /proc about sockets the kernel programs could not describe: an fd whose connection was
//! never announced (its record was lost, or the table evicted it), and which local ports a
//! process listens on (the TCP role of a connection older than netsonde). Each answer is read
//! once per connection, or once per process every few seconds: never per event.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use procfs::{
    net::TcpState,
    process::{FDTarget, Process},
};

/// How long a process's listening ports are trusted.
const LISTEN_CACHE_TTL: Duration = Duration::from_secs(10);
/// Most processes whose listening ports are cached.
const LISTEN_CACHE_MAX: usize = 4096;

/// Addresses of a socket found through /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketAddrs {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

#[derive(Debug, Default)]
pub struct ProcResolver {
    listening: HashMap<u32, (Instant, HashSet<u16>)>,
}

impl ProcResolver {
    /// The addresses of TCP socket `fd` of process `tgid`, if /proc still has it.
    pub fn socket_of_fd(&self, tgid: u32, fd: i32) -> Option<SocketAddrs> {
        let process = Process::new(tgid as i32).ok()?;
        let FDTarget::Socket(inode) = process.fd_from_fd(fd).ok()?.target else {
            return None;
        };
        let entries = process
            .tcp()
            .ok()
            .into_iter()
            .flatten()
            .chain(process.tcp6().ok().into_iter().flatten());
        entries
            .into_iter()
            .find(|e| e.inode == inode)
            .map(|e| SocketAddrs {
                local: e.local_address,
                remote: e.remote_address,
            })
    }

    /// Whether process `tgid` listens on TCP port `port` (in its own network namespace).
    pub fn listens_on(&mut self, tgid: u32, port: u16) -> bool {
        let now = Instant::now();
        if let Some((at, ports)) = self.listening.get(&tgid)
            && now.duration_since(*at) < LISTEN_CACHE_TTL
        {
            return ports.contains(&port);
        }
        if self.listening.len() >= LISTEN_CACHE_MAX {
            self.listening
                .retain(|_, (at, _)| now.duration_since(*at) < LISTEN_CACHE_TTL);
        }
        let ports = listening_ports(tgid);
        let found = ports.contains(&port);
        self.listening.insert(tgid, (now, ports));
        found
    }

    /// Forgets a process that exited.
    pub fn forget(&mut self, tgid: u32) {
        self.listening.remove(&tgid);
    }
}

fn listening_ports(tgid: u32) -> HashSet<u16> {
    let Ok(process) = Process::new(tgid as i32) else {
        return HashSet::new();
    };
    let v4 = process.tcp().unwrap_or_default();
    let v6 = process.tcp6().unwrap_or_default();
    v4.iter()
        .chain(v6.iter())
        .filter(|e| e.state == TcpState::Listen)
        .map(|e| e.local_address.port())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::{
        net::{TcpListener, TcpStream},
        os::fd::AsRawFd,
    };

    use super::*;

    /// Runs against this process's own sockets in the real /proc.
    #[test]
    fn finds_own_sockets_and_listening_ports() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let pid = std::process::id();
        let mut resolver = ProcResolver::default();
        let found = resolver
            .socket_of_fd(pid, client.as_raw_fd())
            .expect("socket in /proc");
        assert_eq!(found.remote, listener.local_addr().unwrap());
        assert_eq!(found.local, client.local_addr().unwrap());
        assert!(resolver.listens_on(pid, port));
        assert!(!resolver.listens_on(pid, client.local_addr().unwrap().port()));
        assert_eq!(
            resolver.socket_of_fd(pid, 0),
            None,
            "stdin is not a TCP socket"
        );
    }
}
