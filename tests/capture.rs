//! The real agent, real servers (nginx, a Python HTTP/1.1 server), real clients (curl, Python
//! sockets), all on loopback: every test asserts the exact exchanges reported for the processes
//! it started. Needs root and kernel BTF; each test says so and returns when they are missing.

mod support;

use std::{
    collections::HashSet,
    io::{BufReader, Write},
    process::{Child, Command, Stdio},
};

use support::{
    Agent, Nginx, PyServer, comm_of, curl, key, python, run_client, serial, support_file,
    wait_for_line,
};

/// tests/support/raw_client.py with `args`, once it printed `line` (it then waits for a line
/// on its stdin).
fn raw_client_until(args: &[&str], line: &str) -> Child {
    let mut client = Command::new(python())
        .arg(support_file("raw_client.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut BufReader::new(client.stdout.take().unwrap()), line);
    client
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn a_hundred_keep_alive_requests_on_one_connection() {
    require_privileges!();
    let _serial = serial();
    let nginx = Nginx::start();
    let agent = Agent::start(&["--comm", "curl", "--comm", "nginx"]);
    let urls: Vec<String> = (0..100).map(|i| nginx.url(&format!("/ka?i={i}"))).collect();
    let mut args = vec!["-s", "-S"];
    for url in &urls {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let client = run_client("curl", &args);
    let capture = agent.stop();

    let targets: Vec<String> = (0..100).map(|i| format!("/ka?i={i}")).collect();
    let expect = |role| sorted(targets.iter().map(|t| key(role, "GET", t, 200)).collect());
    assert_eq!(
        capture.keys_of(client),
        expect("client"),
        "{}",
        capture.stdout
    );
    assert_eq!(
        capture.keys_of(nginx.worker),
        expect("server"),
        "{}",
        capture.stdout
    );
    // In the order sent, over one connection, with the body size nginx sent.
    let client_lines = capture.of(client);
    let order: Vec<&str> = client_lines.iter().map(|l| l.target.as_str()).collect();
    assert_eq!(
        order,
        targets.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let connections: HashSet<&str> = client_lines.iter().map(|l| l.client.as_str()).collect();
    assert_eq!(connections.len(), 1, "keep-alive reuses one connection");
    assert!(
        capture
            .lines
            .iter()
            .all(|l| l.resp_body == 11 && l.incomplete.is_none())
    );
    assert_eq!(nginx.access_keys().len(), 100);
}

#[test]
fn pipelined_requests_in_one_write() {
    require_privileges!();
    let _serial = serial();
    let nginx = Nginx::start();
    let py = python();
    let agent = Agent::start(&["--comm", &comm_of(py), "--comm", "nginx"]);
    let port = nginx.port.to_string();
    let client = run_client(
        py,
        &[
            support_file("raw_client.py").to_str().unwrap(),
            "pipeline",
            "127.0.0.1",
            &port,
            "/index.html",
            "/ka",
            "/missing",
        ],
    );
    let capture = agent.stop();

    let order: Vec<(String, u16)> = capture
        .of(client)
        .iter()
        .map(|l| (l.target.clone(), l.status))
        .collect();
    assert_eq!(
        order,
        [
            ("/index.html".into(), 200),
            ("/ka".into(), 200),
            ("/missing".into(), 404)
        ],
        "{}",
        capture.stdout
    );
    assert_eq!(
        capture.keys_of(nginx.worker),
        sorted(vec![
            key("server", "GET", "/index.html", 200),
            key("server", "GET", "/ka", 200),
            key("server", "GET", "/missing", 404)
        ])
    );
    assert_eq!(
        nginx.access_keys(),
        sorted(vec![
            ("GET".into(), "/index.html".into(), 200),
            ("GET".into(), "/ka".into(), 200),
            ("GET".into(), "/missing".into(), 404)
        ])
    );
}

#[test]
fn chunked_post_until_close_and_a_large_body_from_python() {
    require_privileges!();
    let _serial = serial();
    let server = PyServer::start();
    let agent = Agent::start(&["--comm", "curl", "--comm", &comm_of(python())]);
    let chunked = curl(&[&server.url("/chunked")]);
    let body = "p".repeat(1000);
    let post = curl(&["--data-binary", &body, &server.url("/echo")]);
    let close = curl(&[&server.url("/close")]);
    let big = curl(&[&server.url("/big")]);
    let capture = agent.stop();

    let one = |pid: u32| {
        let lines = capture.of(pid);
        assert_eq!(lines.len(), 1, "pid {pid}:\n{}", capture.stdout);
        lines[0].clone()
    };
    // Chunk framing included: 3+12+2 + 4+27+2 + 3+6+2 + 5 bytes.
    let c = one(chunked);
    assert_eq!(
        (c.key(), c.resp_body, c.incomplete.clone()),
        (key("client", "GET", "/chunked", 200), 66, None)
    );
    let p = one(post);
    assert_eq!(
        (p.key(), p.req_body, p.resp_body),
        (key("client", "POST", "/echo", 200), 1000, 4)
    );
    let u = one(close);
    assert_eq!(
        (u.key(), u.resp_body, u.incomplete.clone()),
        (key("client", "GET", "/close", 200), 39, None)
    );
    let b = one(big);
    assert_eq!(
        (b.key(), b.resp_body, b.incomplete.clone()),
        (key("client", "GET", "/big", 200), 1 << 20, None)
    );

    let server_lines = capture.of(server.pid);
    let mut seen: Vec<_> = server_lines
        .iter()
        .map(|l| (l.key(), l.req_body, l.resp_body))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        sorted(vec![
            (key("server", "GET", "/big", 200), 0, 1 << 20),
            (key("server", "GET", "/chunked", 200), 0, 66),
            (key("server", "GET", "/close", 200), 0, 39),
            (key("server", "POST", "/echo", 200), 1000, 4),
        ]),
        "{}",
        capture.stdout
    );
    // At most the 4 KiB prefix of each syscall is copied; the rest of both 1 MiB transfers (sent
    // and received) is only counted.
    let stat = |name| capture.final_stat(name).unwrap();
    let copied = stat("bytes") - stat("not_captured");
    assert!(copied <= stat("events") * 4096, "{:?}", capture.stats);
    assert!(
        stat("not_captured") >= 2 * (1 << 20) - stat("events") * 4096,
        "{:?}",
        capture.stats
    );
}

#[test]
fn head_204_304_404_and_a_sendfile_body_from_nginx() {
    require_privileges!();
    let _serial = serial();
    let nginx = Nginx::start();
    let agent = Agent::start(&["--comm", "curl", "--comm", "nginx"]);
    let head = curl(&["-I", &nginx.url("/index.html")]);
    let no_content = curl(&[&nginx.url("/nocontent")]);
    let not_modified = curl(&[
        "-H",
        "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT",
        &nginx.url("/index.html"),
    ]);
    let missing = curl(&[&nginx.url("/missing")]);
    let big = curl(&[&nginx.url("/big.bin")]);
    let capture = agent.stop();

    assert_eq!(
        capture.exchanges_with_bodies(head),
        [(key("client", "HEAD", "/index.html", 200), 0)],
        "{}",
        capture.stdout
    );
    assert_eq!(
        capture.exchanges_with_bodies(no_content),
        [(key("client", "GET", "/nocontent", 204), 0)]
    );
    assert_eq!(
        capture.exchanges_with_bodies(not_modified),
        [(key("client", "GET", "/index.html", 304), 0)]
    );
    assert_eq!(capture.exchanges_with_bodies(missing).len(), 1);
    assert_eq!(
        capture.exchanges_with_bodies(missing)[0].0,
        key("client", "GET", "/missing", 404)
    );
    // nginx sends the file with sendfile(): the body never passes through a user buffer.
    assert_eq!(
        capture.exchanges_with_bodies(big),
        [(key("client", "GET", "/big.bin", 200), 1 << 20)]
    );
    let mut server: Vec<_> = capture.exchanges_with_bodies(nginx.worker);
    server.sort();
    let missing_body = capture.exchanges_with_bodies(missing)[0].1;
    assert_eq!(
        server,
        sorted(vec![
            (key("server", "GET", "/big.bin", 200), 1 << 20),
            (key("server", "GET", "/index.html", 304), 0),
            (key("server", "GET", "/missing", 404), missing_body),
            (key("server", "GET", "/nocontent", 204), 0),
            (key("server", "HEAD", "/index.html", 200), 0),
        ]),
        "{}",
        capture.stdout
    );
    assert_eq!(nginx.access_keys().len(), 5);
}

/// A request head longer than the captured prefix (one 6 000-byte header; 4 096 bytes are
/// copied per syscall) is lost on both ends and said so (`heads_cut`), never reported with a
/// guessed part; the next request is whole.
#[test]
fn a_head_longer_than_the_prefix_is_counted_not_invented() {
    require_privileges!();
    let _serial = serial();
    let nginx = Nginx::start();
    let worker = nginx.worker.to_string();
    let agent = Agent::start(&["--comm", "curl", "--pid", &worker]);
    let big = format!("X-Big: {}", "b".repeat(6000));
    let cut = curl(&["-H", &big, &nginx.url("/index.html")]);
    let whole = curl(&[&nginx.url("/index.html")]);
    let capture = agent.stop();
    assert_eq!(nginx.access_keys().len(), 2, "nginx answered both");
    assert_eq!(
        capture.final_stat("heads_cut"),
        Some(2),
        "{:?}",
        capture.stats
    );
    assert!(capture.of(cut).is_empty(), "{}", capture.stdout);
    assert_eq!(
        capture.exchanges_with_bodies(whole).len(),
        1,
        "{}",
        capture.stdout
    );
    assert_eq!(capture.of(nginx.worker).len(), 1, "{}", capture.stdout);
}

#[test]
fn every_syscall_family_is_captured() {
    require_privileges!();
    let _serial = serial();
    let nginx = Nginx::start();
    let py = python();
    let agent = Agent::start(&["--comm", &comm_of(py), "--comm", "nginx"]);
    let port = nginx.port.to_string();
    let script = support_file("raw_client.py");
    let clients: Vec<(&str, u32)> = ["rw", "vector", "msg"]
        .into_iter()
        .map(|mode| {
            (
                mode,
                run_client(
                    py,
                    &[
                        script.to_str().unwrap(),
                        "syscalls",
                        mode,
                        "127.0.0.1",
                        &port,
                        "/ka",
                    ],
                ),
            )
        })
        .collect();
    let capture = agent.stop();

    for (mode, pid) in clients {
        let seen: Vec<_> = capture.exchanges_with_bodies(pid);
        assert_eq!(
            seen,
            [(key("client", "GET", "/ka", 200), 11)],
            "{mode}:\n{}",
            capture.stdout
        );
    }
    assert_eq!(
        capture.keys_of(nginx.worker),
        vec![key("server", "GET", "/ka", 200); 3]
    );
}

#[test]
fn sendmmsg_and_recvmmsg_are_captured() {
    require_privileges!();
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let client_bin = support::build_c_program(dir.path(), "mmsg_client", &[]);
    let nginx = Nginx::start();
    let agent = Agent::start(&["--comm", "mmsg_client", "--comm", "nginx"]);
    let port = nginx.port.to_string();
    let client = run_client(client_bin.to_str().unwrap(), &[&port, "/ka"]);
    let capture = agent.stop();

    // The request head spans two messages of one sendmmsg.
    let seen: Vec<_> = capture.exchanges_with_bodies(client);
    assert_eq!(
        seen,
        [(key("client", "GET", "/ka", 200), 11)],
        "{}",
        capture.stdout
    );
    assert_eq!(
        capture.keys_of(nginx.worker),
        [key("server", "GET", "/ka", 200)]
    );
}

/// 32-bit syscalls are numbered differently: ia32 read (3) and getpid (20) on a traced socket
/// must not be taken for close (3) and writev (20) of x86-64.
#[cfg(target_arch = "x86_64")]
#[test]
fn compat_syscalls_on_a_socket_are_left_alone() {
    require_privileges!();
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let client_bin = support::build_c_program(dir.path(), "compat_client", &[]);
    let nginx = Nginx::start();
    let agent = Agent::start(&["--comm", "compat_client", "--comm", "nginx"]);
    let port = nginx.port.to_string();
    let client = run_client(client_bin.to_str().unwrap(), &[&port, "/ka"]);
    let capture = agent.stop();

    assert_eq!(
        capture.exchanges_with_bodies(client),
        [(key("client", "GET", "/ka", 200), 11)],
        "{}",
        capture.stdout
    );
    assert_eq!(
        capture.keys_of(nginx.worker),
        [key("server", "GET", "/ka", 200)]
    );
    // Nothing invented on the socket: no bytes it did not carry, no close it did not have.
    assert_eq!(
        capture.final_stat("hidden_messages"),
        Some(0),
        "{:?}",
        capture.stats
    );
    assert_eq!(
        capture.final_stat("orphan_responses"),
        Some(0),
        "{:?}",
        capture.stats
    );
    assert_eq!(
        capture.final_stat("unanswered_requests"),
        Some(0),
        "{:?}",
        capture.stats
    );
    assert_eq!(
        capture.final_stat("gap_bytes"),
        Some(0),
        "{:?}",
        capture.stats
    );
}

#[test]
fn ipv6_loopback() {
    require_privileges!();
    let _serial = serial();
    let nginx = Nginx::start();
    let agent = Agent::start(&["--comm", "curl", "--comm", "nginx"]);
    let url = format!("http://[::1]:{}/index.html", nginx.port);
    let client = curl(&["-g", &url]);
    let capture = agent.stop();

    let lines = capture.of(client);
    assert_eq!(lines.len(), 1, "{}", capture.stdout);
    assert_eq!(lines[0].key(), key("client", "GET", "/index.html", 200));
    assert_eq!(lines[0].server, format!("[::1]:{}", nginx.port));
    assert!(lines[0].client.starts_with("[::1]:"), "{}", lines[0].client);
    let server = capture.of(nginx.worker);
    assert_eq!(server.len(), 1);
    assert_eq!(
        (server[0].key(), &server[0].client),
        (key("server", "GET", "/index.html", 200), &lines[0].client)
    );
}

#[test]
fn a_connection_opened_before_the_agent_started() {
    require_privileges!();
    let _serial = serial();
    let nginx = Nginx::start();
    let port = nginx.port.to_string();
    let mut client = raw_client_until(
        &["preexisting", "127.0.0.1", &port, "/index.html", "/ka"],
        "connected",
    );

    let agent = Agent::start(&["--comm", &comm_of(python()), "--comm", "nginx"]);
    client.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    assert!(client.wait().unwrap().success());
    let capture = agent.stop();

    // Only the request sent after the agent started; both ends of the old connection.
    let lines = capture.of(client.id());
    assert_eq!(
        lines.iter().map(|l| l.key()).collect::<Vec<_>>(),
        [key("client", "GET", "/ka", 200)],
        "{}",
        capture.stdout
    );
    assert_eq!(lines[0].server, format!("127.0.0.1:{port}"));
    let server = capture.of(nginx.worker);
    assert_eq!(
        server.iter().map(|l| l.key()).collect::<Vec<_>>(),
        [key("server", "GET", "/ka", 200)]
    );
    assert_eq!(server[0].client, lines[0].client);
    assert!(capture.final_stat("opened").unwrap() >= 2);
}

#[test]
fn bytes_that_are_not_http_yield_no_exchange() {
    require_privileges!();
    let _serial = serial();
    let nginx = Nginx::start();
    let py = python();
    let agent = Agent::start(&["--comm", &comm_of(py), "--comm", "nginx"]);
    let script = format!(
        "import socket\ns=socket.create_connection(('127.0.0.1',{}))\ns.sendall(b'\\x05\\x01\\x00hello not http\\r\\n\\r\\n')\nwhile s.recv(4096): pass\n",
        nginx.port
    );
    let client = run_client(py, &["-c", &script]);
    let capture = agent.stop();

    assert!(capture.of(client).is_empty(), "{}", capture.stdout);
    assert!(capture.of(nginx.worker).is_empty(), "{}", capture.stdout);
    assert!(
        capture.final_stat("not_http").unwrap() >= 2,
        "{:?}",
        capture.stats
    );
}

#[test]
fn a_pid_filter_traces_that_process_only() {
    require_privileges!();
    let _serial = serial();
    let server = PyServer::start();
    let pid = server.pid.to_string();
    let agent = Agent::start(&["--pid", &pid]);
    let client = curl(&[&server.url("/close")]);
    let capture = agent.stop();

    assert!(
        capture.of(client).is_empty(),
        "curl is not selected:\n{}",
        capture.stdout
    );
    assert_eq!(
        capture.keys_of(server.pid),
        [key("server", "GET", "/close", 200)]
    );
    assert_eq!(capture.lines.len(), 1);
}

/// An agent that traces curl and nginx with `config` (YAML) from a file in `dir`.
fn curl_and_nginx_agent(dir: &tempfile::TempDir, config: &str) -> Agent {
    let path = dir.path().join("netsonde.yaml");
    std::fs::write(&path, config).unwrap();
    Agent::start(&[
        "--config",
        path.to_str().unwrap(),
        "--comm",
        "curl",
        "--comm",
        "nginx",
    ])
}

/// One curl fetches `{prefix}{i}` for each i below `n` from nginx, over one connection, and
/// exits; its pid.
fn curl_all(nginx: &Nginx, prefix: &str, n: usize) -> u32 {
    let urls: Vec<String> = (0..n).map(|i| nginx.url(&format!("{prefix}{i}"))).collect();
    let mut args = vec!["-s", "-S"];
    for url in &urls {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    run_client("curl", &args)
}

#[test]
fn a_full_ring_buffer_loses_events_counts_them_and_invents_nothing() {
    require_privileges!();
    let _serial = serial();
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = curl_and_nginx_agent(
        &dir,
        "capture:\n  ring_buffer_bytes: 4096\noutput:\n  stats_interval_secs: 0\n",
    );
    let client = curl_all(&nginx, "/big.bin?i=", 300);
    let capture = agent.stop();

    let lost = capture.final_stat("lost").unwrap();
    assert!(
        lost > 0,
        "a 4 KiB ring cannot keep up with 300 MiB of responses: {:?}",
        capture.stats
    );
    let valid: HashSet<String> = (0..300).map(|i| format!("/big.bin?i={i}")).collect();
    for line in capture
        .of(client)
        .iter()
        .chain(capture.of(nginx.worker).iter())
    {
        assert!(
            valid.contains(&line.target) && line.status == 200,
            "invented: {line:?}"
        );
    }
    let reported = capture.of(client).len();
    assert!(
        reported < 300,
        "with {lost} events lost, some exchanges must be missing"
    );
}

/// nginx answers a POST to a static file (405) as soon as it has the head, then reads and
/// discards the 10 MiB body before it takes the next request on the same connection: the
/// exchange gets the whole body, and the next one none of it (nor its packets).
#[test]
fn a_response_before_the_request_body_ends_gets_the_whole_body() {
    require_privileges!();
    let _serial = serial();
    let nginx = Nginx::start();
    let py = python();
    let worker = nginx.worker.to_string();
    let agent = Agent::start(&["--pid", &worker, "--comm", &comm_of(py)]);
    let size = 10 << 20;
    let out = Command::new(py)
        .arg(support_file("raw_client.py"))
        .args([
            "upload",
            "127.0.0.1",
            &nginx.port.to_string(),
            "/index.html",
        ])
        .arg(size.to_string())
        .arg("/ka")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statuses = String::from_utf8_lossy(&out.stdout).to_string();
    let capture = agent.stop();
    // The oracle: nginx answered both on the one connection, so it consumed the whole body.
    assert_eq!(
        nginx.access_keys(),
        [
            ("GET".to_string(), "/ka".to_string(), 200),
            ("POST".to_string(), "/index.html".to_string(), 405)
        ]
    );
    assert!(
        statuses.starts_with("HTTP/1.1 405") && statuses.contains("HTTP/1.1 200"),
        "{statuses}"
    );
    for role in ["server", "client"] {
        let lines: Vec<_> = capture.lines.iter().filter(|l| l.role == role).collect();
        let seen: Vec<_> = lines
            .iter()
            .map(|l| {
                (
                    l.method.as_str(),
                    l.status,
                    l.req_body,
                    l.incomplete.clone(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [("POST", 405, size, None), ("GET", 200, 0, None)],
            "{role}: {}",
            capture.stdout
        );
        // The body's packets went with the POST.
        if let (Some((_, post_in)), Some((_, get_in))) = (lines[0].packets, lines[1].packets)
            && role == "server"
        {
            assert!(
                post_in > 20 && get_in < 5,
                "{post_in} / {get_in}: {}",
                capture.stdout
            );
        }
    }
}

/// A request nginx closes the connection on without answering (`return 444`): reported as a
/// failed exchange on both sides, no status invented; nginx logs it as 444.
#[test]
fn a_request_closed_without_a_response_is_a_failed_exchange() {
    require_privileges!();
    let _serial = serial();
    let nginx = Nginx::start();
    let worker = nginx.worker.to_string();
    let agent = Agent::start(&["--pid", &worker, "--comm", "curl"]);
    let mut curl = Command::new("curl")
        .args(["-s", "-o", "/dev/null"])
        .arg(nginx.url("/drop"))
        .spawn()
        .unwrap();
    let status = curl.wait().unwrap();
    assert_eq!(status.code(), Some(52), "curl: empty reply from server");
    let client = curl.id();
    let capture = agent.stop();
    assert_eq!(
        nginx.access_keys(),
        [("GET".to_string(), "/drop".to_string(), 444)]
    );
    for pid in [nginx.worker, client] {
        let seen: Vec<_> = capture
            .of(pid)
            .iter()
            .map(|l| (l.target.as_str(), l.status, l.incomplete.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [("/drop", 0, Some("no_response"))],
            "{}",
            capture.stdout
        );
    }
    assert_eq!(capture.final_stat("unanswered_requests"), Some(2));
}

/// A client that ends its connections with dup2 and dup3, putting /dev/null at their fds,
/// instead of close, and lives on: each connection ends in netsonde when its fd is replaced, as
/// in the kernel, which sends the FIN then (no connection to nginx stays established). A
/// dup2 of an fd onto itself ends nothing: the request after it is reported on the same
/// connection. The oracles: the kernel's socket table, and nginx's log.
#[test]
fn connections_ended_by_dup2_and_dup3_are_closed_while_the_process_lives() {
    require_privileges!();
    let _serial = serial();
    let nginx = Nginx::start();
    let port = nginx.port.to_string();
    let agent = Agent::start(&["--comm", &comm_of(python())]);
    const CONNECTIONS: usize = 6;
    let mut client = raw_client_until(
        &["replace", "127.0.0.1", &port, &CONNECTIONS.to_string()],
        "replaced",
    );
    let established = || {
        let out = Command::new("ss")
            .args([
                "-Htn",
                "state",
                "established",
                "sport",
                "=",
                &format!(":{port}"),
            ])
            .output()
            .expect("ss runs");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while established() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(established(), 0, "the kernel ended every connection");
    // Stopped while the client still runs: no process exit ends anything for it.
    let capture = agent.stop();
    client.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    assert!(client.wait().unwrap().success());

    let mut expected = vec![("GET".to_string(), "/index.html".to_string(), 200); CONNECTIONS];
    expected.push(("GET".to_string(), "/ka".to_string(), 200));
    expected.sort();
    assert_eq!(nginx.access_keys(), expected);
    assert_eq!(
        capture.served_by(client.id()),
        expected,
        "{}",
        capture.stdout
    );
    assert_eq!(
        (capture.final_stat("opened"), capture.final_stat("closed")),
        (Some(CONNECTIONS as u64), Some(CONNECTIONS as u64)),
        "{:?}",
        capture.stats
    );
}

/// Slowloris: heads that never end, on connections the client closes and on connections left
/// open past the idle timeout, are counted as incomplete requests, and reported as nothing.
#[test]
fn requests_never_finished_are_counted_at_close_and_at_timeout() {
    require_privileges!();
    let _serial = serial();
    let nginx = Nginx::start();
    let worker = nginx.worker.to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("netsonde.yaml");
    std::fs::write(&config, "connections:\n  idle_timeout_secs: 2\n").unwrap();
    let agent = Agent::start(&["--pid", &worker, "--config", config.to_str().unwrap()]);
    let port = nginx.port.to_string();
    let script = support_file("raw_client.py");
    let script = script.to_str().unwrap();
    // Ten closed after a moment; ten held past the idle timeout (then closed, unseen).
    run_client(python(), &[script, "slow", "127.0.0.1", &port, "10", "0.5"]);
    run_client(python(), &[script, "slow", "127.0.0.1", &port, "10", "5"]);
    let capture = agent.stop();
    // The oracle: nginx logs each as a 400 to which it sent nothing (the client left first).
    let logged = nginx.access_with_bodies();
    assert_eq!(logged.len(), 20, "{logged:?}");
    assert!(
        logged.iter().all(
            |(m, t, status, sent)| (m.as_str(), t.as_str(), *status, *sent)
                == ("GET", "/slow", 400, 0)
        ),
        "{logged:?}"
    );
    assert!(capture.of(nginx.worker).is_empty(), "{}", capture.stdout);
    assert_eq!(
        capture.final_stat("incomplete_requests"),
        Some(20),
        "{:?}",
        capture.stats
    );
    assert_eq!(
        capture.final_stat("expired"),
        Some(10),
        "{:?}",
        capture.stats
    );
}

/// With the reader's timer at its slowest (1 s), only the programs' wake-ups keep a small ring
/// from overflowing: a program that writes a record wakes the reader once an eighth of the
/// ring is in use. 1 000 exchanges (about 2 MB of records) through a 256 KiB ring within about
/// a second: none lost, every one reported on both ends, as nginx's access log has them.
/// (Programs that never woke the reader lost 4 154 events here.)
#[test]
fn the_programs_wake_the_reader_before_a_small_ring_fills() {
    require_privileges!();
    let _serial = serial();
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = curl_and_nginx_agent(
        &dir,
        "capture:\n  ring_buffer_bytes: 262144\n  batch_delay_ms: 1000\n",
    );
    const REQUESTS: usize = 1000;
    let client = curl_all(&nginx, "/index.html?w=", REQUESTS);
    let capture = agent.stop();

    assert_eq!(
        capture.final_stat("lost"),
        Some(0),
        "events lost: {:?}",
        capture.stats
    );
    assert_eq!(nginx.access_log().len(), REQUESTS, "nginx's own count");
    assert_eq!(capture.of(client).len(), REQUESTS, "client exchanges");
    assert_eq!(capture.of(nginx.worker).len(), REQUESTS, "server exchanges");
}

/// Another thread closes a socket while a read() on it waits, and a new connection to nginx
/// takes the fd number before that read returns (tests/support/close_race.c: its own server
/// thread answers the waiting read only then). What the read returns belongs to the closed
/// connection: counted as `after_close` and left out, so the new connection's two exchanges
/// are exact, as nginx logged them. Before the check, those bytes moved the new socket's
/// stream position and its second exchange lost its place. The oracles: the program's own
/// account and nginx's log.
#[test]
fn a_read_returning_after_its_fd_was_closed_and_reused_stays_off_the_new_connection() {
    require_privileges!();
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let program = support::build_c_program(dir.path(), "close_race", &[]);
    let nginx = Nginx::start();
    let agent = Agent::start(&["--comm", "close_race", "--comm", "nginx"]);
    let (pid, lines, capture) = support::run_fd_race(agent, &program, &[nginx.port.to_string()]);
    // The late answer, 43 bytes, read after the close; nginx's /ka and /index.html whole.
    assert_eq!(lines, ["plain 200 11", "late 43", "plain 200 28"]);
    let seen = |role: &str| -> Vec<(String, u16, u64, Option<String>)> {
        capture
            .of(pid)
            .iter()
            .filter(|l| l.role == role)
            .map(|l| {
                (
                    l.target.clone(),
                    l.status,
                    l.resp_body,
                    l.incomplete.clone(),
                )
            })
            .collect()
    };
    assert_eq!(
        seen("client"),
        [
            // Its answer came after the close: the request is reported unanswered.
            ("/late".to_string(), 0, 0, Some("no_response".to_string())),
            ("/ka".to_string(), 200, 11, None),
            ("/index.html".to_string(), 200, 28, None),
        ],
        "{}",
        capture.stdout
    );
    // The program's server thread wrote its answer whole.
    assert_eq!(
        seen("server"),
        [("/late".to_string(), 200, 5, None)],
        "{}",
        capture.stdout
    );
    assert_eq!(capture.served_by(nginx.worker), nginx.access_keys());
    assert_eq!(nginx.access_keys().len(), 2);
    for (stat, value) in [
        ("orphan_responses", 0),
        ("gap_bytes", 0),
        ("after_close", 1),
        ("lost", 0),
    ] {
        assert_eq!(capture.final_stat(stat), Some(value), "{stat}");
    }
}
