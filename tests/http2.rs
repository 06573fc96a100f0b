//! HTTP/2 without TLS, end to end: curl with prior knowledge and h2load against nginx's h2c
//! listener, and curl's `Upgrade: h2c` against hypercorn, captured by the real agent, checked
//! against the servers' access logs and h2load's counts. (TLS: tests/tls.rs; gRPC:
//! tests/grpc.rs.)

mod support;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{Agent, Nginx, curl, free_port, key, python, serial, support_file, wait_for_port};

#[test]
fn curl_prior_knowledge_against_nginx() {
    require_privileges!();
    let _guard = serial();
    let nginx = Nginx::start();
    let agent = Agent::start(&["--comm", "curl", "--comm", "nginx"]);
    // One curl per URL: curl 7.88 fails ("Error in the HTTP2 framing layer") when it reuses
    // an h2c prior-knowledge connection for a second URL, with or without netsonde.
    let expected = [("/index.html", 200, 28), ("/missing", 404, 153)];
    let clients: Vec<u32> = expected
        .iter()
        .map(|(p, ..)| curl(&["--http2-prior-knowledge", &nginx.h2_url(p)]))
        .collect();
    let capture = agent.stop();
    for (client, (path, status, body)) in clients.iter().zip(expected) {
        assert_eq!(
            capture.exchanges_with_bodies(*client),
            vec![(key("client", "GET", path, status), body)],
            "{}",
            capture.stdout
        );
    }
    let server: Vec<_> = capture
        .keys_of(nginx.worker)
        .into_iter()
        .map(|(_, m, t, s)| (m, t, s))
        .collect();
    assert_eq!(server, nginx.access_keys());
    assert_eq!(server.len(), 2);
}

/// 1 MiB over HTTP/2: reads carry many frames, far past the captured prefix. The kernel
/// follows the frames (headers and non-DATA payloads as pieces, DATA skipped), so both sides
/// see the whole exchange, over h2c and over TLS.
#[test]
fn a_large_download_over_http2_is_seen_by_both_sides() {
    require_privileges!();
    let _guard = serial();
    let nginx = Nginx::start();
    let agent = Agent::start(&["--comm", "curl", "--comm", "h2load", "--comm", "nginx"]);
    let h2c = curl(&["--http2-prior-knowledge", &nginx.h2_url("/big.bin")]);
    let h2 = curl(&["-k", "--http2", &nginx.tls_url("/big.bin")]);
    // And a small request after a big one on the same connection: the frames stay aligned.
    // (h2load: curl 7.88 cannot reuse an h2c prior-knowledge connection.)
    let two = support::run_client(
        "h2load",
        &[
            "-n",
            "2",
            "-c",
            "1",
            "-m",
            "1",
            &nginx.h2_url("/big.bin"),
            &nginx.h2_url("/ka"),
        ],
    );
    let capture = agent.stop();
    for client in [h2c, h2] {
        assert_eq!(
            capture.exchanges_with_bodies(client),
            vec![(key("client", "GET", "/big.bin", 200), 1 << 20)],
            "{}",
            capture.stdout
        );
    }
    let mut both = capture.exchanges_with_bodies(two);
    both.sort();
    assert_eq!(
        both,
        vec![
            (key("client", "GET", "/big.bin", 200), 1 << 20),
            (key("client", "GET", "/ka", 200), 11)
        ],
        "{}",
        capture.stdout
    );
    let served: Vec<_> = capture
        .of(nginx.worker)
        .iter()
        .map(|l| (l.target.clone(), l.resp_body))
        .collect();
    assert_eq!(
        served.len(),
        4,
        "{served:?} {}",
        capture.stats.last().unwrap()
    );
    assert_eq!(capture.final_stat("h2_broken"), Some(0));
    assert_eq!(capture.final_stat("h2_walk_lost"), Some(0));
    assert!(capture.final_stat("h2_pieces").unwrap() > 0);
}

#[test]
fn h2load_many_concurrent_streams_exact_counts() {
    require_privileges!();
    let _guard = serial();
    let nginx = Nginx::start();
    let agent = Agent::start(&["--comm", "h2load", "--comm", "nginx"]);
    // 2 connections, up to 20 streams in flight on each, 400 requests.
    let out = std::process::Command::new("h2load")
        .args([
            "-n",
            "400",
            "-c",
            "2",
            "-m",
            "20",
            &nginx.h2_url("/index.html"),
        ])
        .output()
        .expect("h2load (Debian nghttp2-client)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("400 succeeded"), "h2load itself: {report}");
    let capture = agent.stop();
    let server = capture.of(nginx.worker);
    assert_eq!(server.len(), 400, "{}", capture.stdout);
    assert!(
        server
            .iter()
            .all(|l| l.method == "GET" && l.status == 200 && l.resp_body == 28)
    );
    let clients = capture.lines.iter().filter(|l| l.role == "client").count();
    assert_eq!(clients, 400);
    assert_eq!(nginx.access_log().len(), 400);
}

/// curl's `--http2` on an http:// URL sends HTTP/1.1 with `Upgrade: h2c`; hypercorn answers
/// 101 and then HTTP/2, where the request is stream 1. One exchange per request, as HTTP/2.
#[test]
fn an_h2c_upgrade_is_followed_into_http2() {
    require_privileges!();
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let port = free_port();
    let mut server = Command::new(python())
        .args(["-m", "hypercorn", "--access-logfile"])
        .arg(&log)
        .args(["--bind", &format!("127.0.0.1:{port}"), "asgi_app:app"])
        .current_dir(support_file(""))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run hypercorn (pip install hypercorn)");
    wait_for_port(&format!("127.0.0.1:{port}"));
    // hypercorn serves from a worker process: --pid covers the tree.
    let agent = Agent::start(&["--comm", "curl", "--pid", &server.id().to_string()]);
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let expected = [("/up", 200, 15), ("/missing", 404, 9)];
    let clients: Vec<u32> = expected
        .iter()
        .map(|(path, ..)| curl(&["--http2", &url(path)]))
        .collect();
    // hypercorn writes its access log after the response: wait for both lines.
    let deadline = Instant::now() + Duration::from_secs(10);
    let access = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 2 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let capture = agent.stop();
    let _ = server.kill();
    let _ = server.wait();
    for (client, (path, status, body)) in clients.iter().zip(expected) {
        assert_eq!(
            capture.exchanges_with_bodies(*client),
            vec![(key("client", "GET", path, status), body)],
            "{}",
            capture.stdout
        );
    }
    // The server side, against hypercorn's own log ("GET /up 2" 200 15: HTTP/2 after the
    // upgrade).
    let mut logged: Vec<_> = access
        .lines()
        .filter_map(|l| {
            let request = l.split('"').nth(1)?;
            let status: u16 = l
                .split('"')
                .nth(2)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            let mut parts = request.split(' ');
            Some((
                parts.next()?.to_string(),
                parts.next()?.to_string(),
                parts.next()?.to_string(),
                status,
            ))
        })
        .collect();
    logged.sort();
    assert_eq!(
        logged,
        [
            ("GET".into(), "/missing".into(), "2".into(), 404),
            ("GET".into(), "/up".into(), "2".into(), 200)
        ]
    );
    let mut served: Vec<_> = capture
        .lines
        .iter()
        .filter(|l| l.role == "server")
        .map(|l| {
            (
                l.method.clone(),
                l.target.clone(),
                "2".to_string(),
                l.status,
            )
        })
        .collect();
    served.sort();
    assert_eq!(served, logged, "{}", capture.stdout);
    // Two connections upgraded, seen from both ends.
    assert_eq!(capture.final_stat("h2_connections"), Some(4));
    assert_eq!(capture.final_stat("not_http"), Some(0));
}

/// A connection opened (and used) before the agent started, then used again: its frames are
/// found mid-stream and its header blocks decode as far as they can. A path the client's
/// encoder sends as a reference to a table entry from before the join is `{unknown}`, never
/// another path; new paths are literals and exact. Both ends are joined, so both report.
#[test]
fn an_http2_connection_older_than_the_agent_is_joined() {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    require_privileges!();
    let _guard = serial();
    let nginx = Nginx::start();
    let mut client = Command::new(python())
        .arg(support_file("h2_client.py"))
        .args([
            &nginx.h2_port.to_string(),
            "/index.html,/ka",
            "/ka,/missing,/index.html?v=2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("h2_client.py (pip install h2)");
    let mut stdout = BufReader::new(client.stdout.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    let before = nginx.access_log().len();
    assert_eq!(before, 2);
    let agent = Agent::start(&[
        "--pid",
        &client.id().to_string(),
        "--pid",
        &nginx.worker.to_string(),
    ]);
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut results = String::new();
    stdout.read_to_string(&mut results).unwrap();
    assert!(support::wait_timeout(&mut client, Duration::from_secs(30)).success());
    let capture = agent.stop();
    let reported: Vec<(String, u16)> = serde_json::from_str(results.trim()).unwrap();
    assert_eq!(
        reported,
        [
            ("/ka".into(), 200),
            ("/missing".into(), 404),
            ("/index.html?v=2".into(), 200)
        ]
    );
    // The repeated path was a table reference: unknown, not guessed.
    let expected = vec![
        ("GET".to_string(), "/index.html?v=2".to_string(), 200),
        ("GET".to_string(), "/missing".to_string(), 404),
        ("GET".to_string(), "{unknown}".to_string(), 200),
    ];
    for (pid, role) in [(client.id(), "client"), (nginx.worker, "server")] {
        let mut got: Vec<_> = capture
            .of(pid)
            .iter()
            .map(|l| {
                assert_eq!(l.role, role);
                (l.method.clone(), l.target.clone(), l.status)
            })
            .collect();
        got.sort();
        assert_eq!(got, expected, "{role}:\n{}", capture.stdout);
    }
    // nginx logged the same three after the join.
    let logged: Vec<_> = nginx.access_log()[before..]
        .iter()
        .map(|l| l.split('"').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(
        logged,
        [
            "GET /ka HTTP/2.0",
            "GET /missing HTTP/2.0",
            "GET /index.html?v=2 HTTP/2.0"
        ]
    );
    // :authority and user-agent of every request, and the repeated :path, on each side.
    assert!(capture.final_stat("h2_unknown_fields").unwrap() >= 14);
    assert_eq!(capture.final_stat("h2_broken"), Some(0));
}
