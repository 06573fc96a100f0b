//! TLS through uprobes on OpenSSL, end to end: nginx serving HTTPS (HTTP/1.1 and HTTP/2 by
//! ALPN) to fresh curl processes, captured by the real agent as plaintext on the syscall-level
//! connection, checked against nginx's access log and in what a real collector receives.

mod support;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use support::{Agent, Nginx, collector::Collector, curl, key, run_client_env, serial};

const LIBSSL: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib/aarch64-linux-gnu/libssl.so.3",
];

/// Every curl is a new process started after the agent: its first (and only) request is
/// captured because the libssl on disk was hooked at start, not when curl was first seen.
#[test]
fn https_is_seen_in_plaintext_from_the_first_request_of_fresh_processes() {
    require_privileges!();
    let _guard = serial();
    let collector = Collector::start();
    let nginx = Nginx::start();
    let worker = nginx.worker.to_string();
    let agent = Agent::start_with_env(
        &[
            "--comm",
            "curl",
            "--pid",
            &worker,
            "--exporter",
            "console",
            "--exporter",
            "otlp",
            "--otlp-endpoint",
            &collector.grpc_url(),
        ],
        &[("OTEL_METRIC_EXPORT_INTERVAL", "500")],
    );
    let expected = [
        ("--http1.1", "/index.html", 200, 28),
        ("--http1.1", "/missing", 404, 153),
        ("--http2", "/ka", 200, 11),
        ("--http2", "/missing", 404, 153),
    ];
    let clients: Vec<u32> = expected
        .iter()
        .map(|(version, path, ..)| curl(&["-k", version, &nginx.tls_url(path)]))
        .collect();
    let capture = agent.stop();
    for (client, (version, path, status, body)) in clients.iter().zip(expected) {
        assert_eq!(
            capture.exchanges_with_bodies(*client),
            vec![(key("client", "GET", path, status), body)],
            "curl {version} {path}:\n{}",
            capture.stdout
        );
    }
    let server = capture.served_by(nginx.worker);
    assert_eq!(server, nginx.access_keys());
    assert_eq!(server.len(), 4);
    assert!(
        capture.lines.iter().all(|l| l.tls),
        "every exchange went over TLS:\n{}",
        capture.stdout
    );
    // Two HTTP/2 connections (one per side each): found by their preface inside TLS.
    assert_eq!(capture.final_stat("h2_connections"), Some(4));
    // The handshakes and the ciphertext were never taken for HTTP.
    assert_eq!(capture.final_stat("not_http"), Some(0));
    assert_eq!(capture.final_stat("tls_no_socket"), Some(0));
    // Eight connection ends, each TLS on the wire and each read in plaintext.
    assert_eq!(capture.final_stat("tls_connections"), Some(8));
    assert_eq!(capture.final_stat("tls_plaintext"), Some(8));
    assert!(capture.final_stat("tls_events").unwrap() >= 8);

    // In OTLP: HTTPS spans, HTTP/1.1 or 2 as negotiated.
    let received = collector.wait_until("the server's four spans", |r| {
        r.spans_of(nginx.worker).len() >= 4
    });
    let mut seen: Vec<_> = received
        .spans_of(nginx.worker)
        .iter()
        .map(|s| {
            (
                s.attr("url.path").unwrap_or_default(),
                s.attr("network.protocol.version").unwrap_or_default(),
                s.attr("url.scheme").unwrap_or_default(),
            )
        })
        .collect();
    seen.sort();
    let row = |p: &str, v: &str| (p.to_string(), v.to_string(), "https".to_string());
    assert_eq!(
        seen,
        [
            row("/index.html", "1.1"),
            row("/ka", "2"),
            row("/missing", "1.1"),
            row("/missing", "2"),
        ]
    );
}

/// A libssl the agent has never seen (a copy, found through LD_LIBRARY_PATH) is hooked when a
/// program that needs it starts: from its ELF dependencies at exec, before the loader maps it.
#[test]
fn a_new_libssl_is_hooked_when_a_program_needing_it_starts() {
    require_privileges!();
    let Some(system) = LIBSSL.into_iter().find(|p| Path::new(p).is_file()) else {
        eprintln!("skipped: no system libssl.so.3 to copy");
        return;
    };
    let _guard = serial();
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("libssl.so.3");
    std::fs::copy(system, &copy).unwrap();
    let agent = Agent::start(&["--comm", "curl"]);
    let hooked = format!("TLS: hooked {}", copy.display());
    assert!(
        !agent.stderr().contains(&hooked),
        "hooked before any program needed it"
    );
    let ld_path = dir.path().to_str().unwrap();
    let fresh = |path: &str| {
        run_client_env(
            "curl",
            &["-s", "-S", "-k", "-o", "/dev/null", &nginx.tls_url(path)],
            &[("LD_LIBRARY_PATH", ld_path)],
        )
    };
    // The first program to need the copy gets it hooked. Hooking a file the kernel has never
    // probed costs about an RCU grace period, which a curl on loopback can outrun: its own
    // request may or may not be seen, so it is not checked.
    let first = fresh("/index.html");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.stderr().contains(&hooked) {
        assert!(
            Instant::now() < deadline,
            "{hooked} never logged:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = fresh("/ka");
    let capture = agent.stop();
    assert_eq!(
        capture.exchanges_with_bodies(second),
        vec![(key("client", "GET", "/ka", 200), 11)],
        "{}",
        capture.stdout
    );
    assert!(capture.of(second)[0].tls);
    assert!(capture.of(first).len() <= 1);
    assert_eq!(capture.final_stat("not_http"), Some(0));
}

/// Where .ci/openssl-1.1.sh unpacks Debian 11's OpenSSL 1.1.1 (binary and libraries).
const OPENSSL_1_1: &str = "/opt/netsonde-test/openssl-1.1";

/// OpenSSL 1.1.1 (the `openssl` binary and its own libssl.so.1.1, found through
/// LD_LIBRARY_PATH): the library is hooked when a program needing it starts, and the plaintext
/// of `openssl s_client` is captured.
#[test]
fn openssl_1_1_is_hooked_too() {
    require_privileges!();
    let root = Path::new(OPENSSL_1_1);
    let openssl = root.join("usr/bin/openssl");
    if !openssl.is_file() {
        eprintln!(
            "skipped: OpenSSL 1.1 is not unpacked at {OPENSSL_1_1} (.ci/openssl-1.1.sh does it)"
        );
        return;
    }
    let libs = root.join("usr/lib/x86_64-linux-gnu");
    let _guard = serial();
    let nginx = Nginx::start();
    let agent = Agent::start(&["--comm", "openssl"]);
    let hooked = format!("TLS: hooked {}", libs.join("libssl.so.1.1").display());
    let env = [("LD_LIBRARY_PATH", libs.to_str().unwrap())];
    // A first run only to have the library hooked (a new file takes one RCU grace period). It
    // waits on its input until the hook is in: netsonde finds the library through the
    // process's /proc entries, and a process that has already exited (`openssl version` takes a
    // millisecond) has none, so on a busy machine it was sometimes missed.
    let mut first = std::process::Command::new(&openssl)
        .args(["dgst", "-sha256"])
        .envs(env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.stderr().contains(&hooked) {
        assert!(
            Instant::now() < deadline,
            "{hooked} never logged:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(first.stdin.take());
    assert!(support::wait_timeout(&mut first, Duration::from_secs(10)).success());
    let mut client = std::process::Command::new(&openssl)
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{}", nginx.tls_port),
        ])
        .env("LD_LIBRARY_PATH", &libs)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::{Read as _, Write as _};
    client
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /ka HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    client
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut response)
        .unwrap();
    let _ = client.wait();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let capture = agent.stop();
    assert_eq!(
        capture.exchanges_with_bodies(client.id()),
        vec![(key("client", "GET", "/ka", 200), 11)],
        "{}",
        capture.stdout
    );
    assert!(capture.of(client.id())[0].tls);
}

/// Node.js carries its own OpenSSL inside the `node` executable and gives it memory buffers,
/// not the socket: the executable is hooked when the first node starts, and each `SSL *` is
/// joined to its socket around the calls (the handshake's flight written right after, the
/// ciphertext read right before). A fresh Node server and a fresh Node client, HTTP/1.1 with
/// keep-alive and HTTP/2 by ALPN: each side's exchanges are exactly what the peer itself
/// printed, from the client's first request.
#[test]
fn node_https_is_seen_in_plaintext_on_both_sides() {
    require_privileges!();
    let node = "node";
    if std::process::Command::new(node)
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no node on PATH (.ci/run installs Node.js)");
        return;
    }
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::new(dir.path());
    let script = support::support_file("node_tls.js").display().to_string();
    let port = support::free_port().to_string();
    let agent = Agent::start(&["--comm", "node"]);
    let mut server = std::process::Command::new(node)
        .args([
            script.as_str(),
            "server",
            &pki.server_key,
            &pki.server_cert,
            &port,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut server_out = std::io::BufReader::new(server.stdout.take().unwrap());
    support::wait_for_line(&mut server_out, "ready");
    // The first node is what gets the executable hooked (hooking a file the kernel has never
    // probed takes about an RCU grace period); the client starts after that, and every one of
    // its requests is seen, from the first. A node built against the system's libssl (Debian's
    // own package) has nothing to hook: its libssl was hooked at start.
    let exe = std::fs::read_link(format!("/proc/{}/exe", server.id())).unwrap();
    let inside = netsonde::probes::libs::symbol_offsets(&exe, &["SSL_write"]).unwrap()[0].is_some();
    if inside {
        agent.wait_for_log("OpenSSL inside the executable");
    } else {
        eprintln!(
            "{} has no OpenSSL inside: read through the system libssl",
            exe.display()
        );
    }
    let client = std::process::Command::new(node)
        .args([script.as_str(), "client", &pki.ca, &port])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client_pid = client.id();
    let client = client.wait_with_output().unwrap();
    assert!(client.status.success(), "{client:?}");
    // `netsonde probes` names what it would hook for the running server.
    if inside {
        let row = support::tls_probe_row("tls.openssl", &exe).unwrap_or_else(|l| panic!("{l}"));
        assert!(row.contains("OpenSSL inside the executable"), "{row}");
    }
    // Let the server see the closes before it goes (its lines are written synchronously to
    // a pipe).
    std::thread::sleep(Duration::from_millis(300));
    let server_pid = server.id();
    let _ = server.kill();
    let _ = server.wait();
    let capture = agent.stop();

    // Each side's own account: the client's "METHOD TARGET STATUS BYTES" in order, the
    // server's "METHOD TARGET STATUS VERSION" per answer.
    use std::io::BufRead as _;
    let answered: Vec<String> = server_out.lines().map_while(Result::ok).collect();
    support::assert_https_peers(
        &capture,
        (client_pid, &String::from_utf8_lossy(&client.stdout)),
        (server_pid, &answered),
    );
}

/// OpenSSL linked into a program statically (`gcc -static … -lssl -lcrypto`): with its symbol
/// table the executable is hooked like a libssl and its plaintext read, exactly what it
/// printed; stripped, netsonde says in one line that it carries OpenSSL it cannot read.
#[test]
fn openssl_linked_statically_is_read_and_stripped_is_named() {
    require_privileges!();
    if !Path::new("/usr/lib/x86_64-linux-gnu/libssl.a").is_file() {
        eprintln!("skipped: no static OpenSSL (libssl-dev)");
        return;
    }
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let source = support::support_file("static_tls_client.c");
    let build = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let status = std::process::Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&out)
            .arg(&source)
            .args(extra)
            .args(["-lssl", "-lcrypto", "-lpthread"])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "gcc {name}");
        out
    };
    let full = build("static-tls", &[]);
    let stripped = build("static-tls-bare", &["-s"]);
    let nginx = Nginx::start();
    let port = nginx.tls_port.to_string();
    let agent = Agent::start(&["--comm", "static-tls", "--comm", "static-tls-bare"]);
    let run = |program: &Path, paths: &[&str]| {
        let out = std::process::Command::new(program)
            .arg(&port)
            .args(paths)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        out
    };
    // The first run gets the new file hooked (about an RCU grace period, longer than this
    // program takes): it may or may not be seen, and is not checked.
    run(&full, &["/ka"]);
    agent.wait_for_log(&format!("TLS: hooked {}", full.display()));
    assert!(
        agent.stderr().contains("OpenSSL inside the executable"),
        "{}",
        agent.stderr()
    );
    let child = std::process::Command::new(&full)
        .arg(&port)
        .args(["/index.html", "/missing"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    run(&stripped, &["/ka"]);
    agent.wait_for_log(&format!(
        "TLS: cannot hook {}: OpenSSL or BoringSSL is linked in",
        stripped.display()
    ));
    let capture = agent.stop();
    // The program's own account: "STATUS BYTES" per response.
    let printed: Vec<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .zip(["/index.html", "/missing"])
        .map(|(l, path)| {
            let (status, bytes) = l.split_once(' ').unwrap();
            (
                key("client", "GET", path, status.parse().unwrap()),
                bytes.parse::<u64>().unwrap(),
            )
        })
        .collect();
    assert_eq!(printed.len(), 2, "{out:?}");
    assert_eq!(
        capture.exchanges_with_bodies(pid),
        printed,
        "{}",
        capture.stdout
    );
    assert!(capture.of(pid).iter().all(|l| l.tls));
}

/// Another thread closes a TLS socket while an `SSL_read` sits between its socket read and its
/// return, and the fd number goes to a new plain connection meanwhile
/// (tests/support/tls_close_race.c stops the read in a BIO callback until then). The
/// plaintext that `SSL_read` then returns belongs to the closed connection: it is counted as
/// `tls_after_close`, and the new connection keeps exactly its own exchange. Before the check,
/// the answer went onto the new connection (an orphan response there, and the plain
/// connection counted as TLS). The oracles: the program's own account, and nginx's log.
#[test]
fn plaintext_read_after_its_socket_closed_stays_off_the_socket_that_took_its_fd() {
    require_privileges!();
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let program = support::build_c_program(dir.path(), "tls_close_race", &["-lssl", "-lcrypto"]);
    let nginx = Nginx::start();
    let agent = Agent::start(&["--comm", "tls_close_race", "--comm", "nginx"]);
    let (pid, lines, capture) = support::run_fd_race(
        agent,
        &program,
        &[nginx.tls_port.to_string(), nginx.port.to_string()],
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "plain 200 11", "{lines:?}");
    let tls_bytes: i64 = lines[1].strip_prefix("tls ").unwrap().parse().unwrap();
    assert!(
        tls_bytes > 0,
        "SSL_read returned the answer after the close: {lines:?}"
    );

    let client: Vec<_> = capture
        .of(pid)
        .iter()
        .map(|l| {
            (
                l.target.clone(),
                l.status,
                l.resp_body,
                l.tls,
                l.incomplete.clone(),
            )
        })
        .collect();
    assert_eq!(
        client,
        [
            // Its answer was decrypted after the close: the request is reported unanswered.
            (
                "/index.html".to_string(),
                0,
                0,
                true,
                Some("no_response".to_string())
            ),
            ("/ka".to_string(), 200, 11, false, None),
        ],
        "{}",
        capture.stdout
    );
    let served = capture.served_by(nginx.worker);
    assert_eq!(served, nginx.access_keys());
    assert_eq!(nginx.access_keys().len(), 2);
    for (stat, value) in [
        ("orphan_responses", 0),
        ("tls_connections", 2),
        ("tls_after_close", 1),
        ("tls_no_socket", 0),
    ] {
        assert_eq!(capture.final_stat(stat), Some(value), "{stat}");
    }
}
