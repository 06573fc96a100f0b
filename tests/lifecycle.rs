//! Process lifecycle: children of a `--pid` process are traced from their first syscall,
//! because the kernel adds them to the monitored set at fork, before they run.

mod support;

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use support::{Agent, Nginx, key, serial, wait_timeout};

#[test]
fn children_of_a_traced_process_are_traced_from_their_first_syscall() {
    require_privileges!();
    let _guard = serial();
    let nginx = Nginx::start();
    // A shell that waits for a line, then starts curl (a fork and an exec) and a second
    // shell that starts another curl (a grandchild).
    let script = format!(
        "read go; curl -s -o /dev/null {url}; sh -c 'curl -s -o /dev/null {url2}'; echo done",
        url = nginx.url("/index.html"),
        url2 = nginx.url("/ka"),
    );
    let mut shell = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let agent = Agent::start(&["--pid", &shell.id().to_string()]);
    shell.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = wait_timeout(&mut shell, Duration::from_secs(30));
    assert!(status.success());
    let capture = agent.stop();
    // Only the shell's descendants are traced: two client exchanges, nothing of nginx.
    let mut got: Vec<_> = capture
        .lines
        .iter()
        .map(|l| (l.key(), l.comm.as_str(), l.pid != shell.id()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (key("client", "GET", "/index.html", 200), "curl", true),
            (key("client", "GET", "/ka", 200), "curl", true),
        ],
        "{}",
        capture.stdout
    );
    assert!(capture.of(nginx.worker).is_empty());
    // Each fork of a monitored process was confirmed: curl, sh, the inner curl (at least).
    assert!(
        capture.final_stat("inherited").unwrap() >= 3,
        "{}",
        capture.stats.last().unwrap()
    );
}

/// A process that exits without closing its socket leaves that fd's entry in the kernel's
/// socket cache (keyed by process, so the kernel cannot drop it at exit): the lifecycle stage
/// sweeps such entries, here once 100 processes have exited.
#[test]
fn the_socket_cache_entries_of_exited_processes_are_swept() {
    require_privileges!();
    let _guard = serial();
    let nginx = Nginx::start();
    let py = support::python();
    let agent = Agent::start(&["--comm", &support::comm_of(py)]);
    let client = format!(
        "import os, socket\n\
         s = socket.create_connection(('127.0.0.1', {}))\n\
         s.sendall(b'GET /index.html HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n\
         s.recv(4096)\n\
         os._exit(0)\n",
        nginx.port
    );
    for _ in 0..110 {
        let status = Command::new(py).args(["-c", &client]).status().unwrap();
        assert!(status.success());
    }
    // Exit events are acted on as they arrive.
    std::thread::sleep(Duration::from_millis(1500));
    let capture = agent.stop();
    let swept = capture.final_stat("swept").unwrap();
    assert!(swept >= 100, "{}", capture.stats.last().unwrap());
}

/// A process that execs into a traced name is traced from the exec on, on a CPU that has just
/// cached "not traced" for it: each shell, pinned to CPU 0, reads a file (its own syscall,
/// decided "not traced" under `--comm curl`) and execs curl, whose request must be seen. The
/// exec moves the kernel's decision generation; without that, curl's syscalls would meet the
/// shell's cached decision (measured: 2 of 20 requests missed).
#[test]
fn a_process_that_execs_into_a_traced_name_is_traced_on_the_same_cpu() {
    require_privileges!();
    let _guard = serial();
    let nginx = Nginx::start();
    let agent = Agent::start(&["--comm", "curl"]);
    const SHELLS: usize = 50;
    let script = format!(
        "read x < /etc/hostname; exec curl -s -o /dev/null {}",
        nginx.url("/index.html")
    );
    for _ in 0..SHELLS {
        let status = Command::new("taskset")
            .args(["-c", "0", "sh", "-c", &script])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let capture = agent.stop();
    let clients = capture
        .lines
        .iter()
        .filter(|l| l.key() == key("client", "GET", "/index.html", 200) && l.comm == "curl")
        .count();
    assert_eq!(clients, SHELLS, "{}", capture.stdout);
    assert!(capture.of(nginx.worker).is_empty(), "nginx is not traced");
}
