//! HTTP/2 without TLS, end to end: curl with prior knowledge and h2load against nginx's h2c
//! listener, and curl's `Upgrade: h2c` against hypercorn, captured by the real agent, checked
//! against the servers' access logs and h2load's counts. (TLS: tests/tls.rs; gRPC:
//! tests/grpc.rs.)

mod support;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{
    Agent, Capture, MIXED_SIZES, Nginx, curl, free_port, key, python, serial, support_file,
    wait_for_port,
};

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
    let server = capture.served_by(nginx.worker);
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

/// Runs h2load with `args`; returns its pid and its report, after checking that every request
/// succeeded by its own count.
fn h2load(args: &[&str]) -> (u32, String) {
    let child = Command::new("h2load")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("h2load (Debian nghttp2-client)");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let requests = report
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no h2load report: {report}"));
    let number = |word: &str| -> u64 {
        requests
            .split(',')
            .find_map(|part| {
                part.trim()
                    .strip_suffix(word)?
                    .trim()
                    .rsplit(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{word} in {requests}"))
    };
    assert_eq!(
        number("total"),
        number("succeeded"),
        "h2load itself: {report}"
    );
    (pid, report)
}

/// The server's exchanges as nginx logs them: (method, target, status, response body), sorted.
fn served(capture: &Capture, nginx: &Nginx) -> Vec<(String, String, u16, u64)> {
    let mut served: Vec<_> = capture
        .of(nginx.worker)
        .iter()
        .map(|l| (l.method.clone(), l.target.clone(), l.status, l.resp_body))
        .collect();
    served.sort();
    served
}

/// Every size from tiny to 1 MiB, served by nginx with sendfile (DATA payloads straight from
/// the file, their frame headers by writev) and from memory (writev of whole frames), over h2c
/// and TLS, one stream at a time and sixteen at once. Every request nginx logged is exactly one
/// server exchange with the body nginx says it sent; every request h2load made is one client
/// exchange with the file's size; no connection loses its place.
#[test]
fn mixed_sizes_are_exact_on_every_write_path() {
    require_privileges!();
    let _guard = serial();
    let nginx = Nginx::start();
    let agent = Agent::start(&["--comm", "h2load", "--comm", "nginx"]);
    let mut clients = Vec::new();
    for tls in [false, true] {
        let urls: Vec<String> = MIXED_SIZES
            .iter()
            .flat_map(|size| ["/", "/nosf/"].map(|dir| format!("{dir}s{size}.bin")))
            .map(|path| {
                if tls {
                    nginx.tls_url(&path)
                } else {
                    nginx.h2_url(&path)
                }
            })
            .collect();
        for streams in ["1", "16"] {
            let n = (urls.len() * 6).to_string();
            let mut args = vec!["-n", &n, "-c", "2", "-m", streams];
            args.extend(urls.iter().map(String::as_str));
            let (pid, _) = h2load(&args);
            clients.push((pid, urls.len() * 6));
        }
    }
    let capture = agent.stop();
    let size_of = |target: &str| -> u64 {
        let name = target.rsplit('/').next().unwrap();
        name[1..name.len() - 4].parse().unwrap()
    };
    for (pid, n) in clients {
        let lines = capture.of(pid);
        assert_eq!(lines.len(), n, "client {pid}:\n{}", capture.stdout);
        for l in lines {
            assert_eq!(
                (l.status, l.resp_body, l.incomplete.as_deref()),
                (200, size_of(&l.target), None),
                "{l:?}"
            );
        }
    }
    let logged = nginx.access_with_bodies();
    assert_eq!(logged.len(), 4 * 6 * 2 * MIXED_SIZES.len());
    assert_eq!(
        served(&capture, &nginx),
        logged,
        "{}",
        capture.stats.last().unwrap()
    );
    for stat in [
        "lost",
        "h2_broken",
        "h2_walk_lost",
        "h2_lost_streams",
        "gap_bytes",
    ] {
        assert_eq!(capture.final_stat(stat), Some(0), "{stat}");
    }
}

/// At load: h2load sends 160 000 requests of mixed sizes to one nginx worker over h2c, paced at
/// 16 000 a second, so ten seconds (what it reached is printed: tests do not judge speed;
/// benchmarks/RESULTS.md has the figures). Every request nginx logged is exactly one server
/// exchange with its body size, none invented, no connection broken. (A count, not a duration:
/// requests still in flight when a timed run stops are logged by nginx but never answered.)
#[test]
fn h2c_at_load_every_logged_request_is_one_exchange() {
    require_privileges!();
    let _guard = serial();
    let nginx = Nginx::start();
    let agent = Agent::start(&["--pid", &nginx.worker.to_string()]);
    let urls: Vec<String> = [100, 3_000, 12_000, 100, 30_000, 100, 3_000, 60_000]
        .iter()
        .enumerate()
        .map(|(i, size)| {
            let dir = if i % 2 == 0 { "/" } else { "/nosf/" };
            nginx.h2_url(&format!("{dir}s{size}.bin"))
        })
        .collect();
    let mut args = vec!["-n", "160000", "-c", "8", "-m", "8", "--rps", "2000"];
    args.extend(urls.iter().map(String::as_str));
    let (_, report) = h2load(&args);
    let capture = agent.stop();
    let rate = report
        .lines()
        .find(|l| l.starts_with("finished in"))
        .unwrap_or_default();
    eprintln!("h2load: {rate}");
    let logged = nginx.access_with_bodies();
    assert_eq!(logged.len(), 160_000, "{report}");
    assert_eq!(
        served(&capture, &nginx),
        logged,
        "{}",
        capture.stats.last().unwrap()
    );
    for stat in ["lost", "h2_broken", "h2_walk_lost", "h2_lost_streams"] {
        assert_eq!(capture.final_stat(stat), Some(0), "{stat}");
    }
}

/// A burst of 1 MiB responses overflows a small ring buffer: records are lost on both ends, and
/// each loses its place in the responses' frames. Then the client sends a frame no sender would
/// (a PING with the reserved bit set, which nginx rightly ignores): the kernel's walk and the
/// parser both lose their place in the requests. Both find it again each time. Nothing is
/// invented on either side, and every request made after the burst is seen exactly, by both.
#[test]
fn after_lost_records_both_ends_find_their_place_again() {
    use std::io::{Read as _, Write as _};
    require_privileges!();
    let _guard = serial();
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("netsonde.yaml");
    std::fs::write(&config, "capture:\n  ring_buffer_bytes: 16384\n").unwrap();
    let script = format!(
        "read go; exec {} {} {} /big.bin 16 4 20",
        python(),
        support_file("h2_burst.py").display(),
        nginx.h2_port
    );
    let mut client = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let agent = Agent::start(&[
        "--config",
        config.to_str().unwrap(),
        "--pid",
        &nginx.worker.to_string(),
        "--pid",
        &client.id().to_string(),
    ]);
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(support::wait_timeout(&mut client, Duration::from_secs(60)).success());
    let mut json = String::new();
    client
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut json)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let capture = agent.stop();
    let report: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let stat = |name| capture.final_stat(name).unwrap();
    // The ring buffer overflowed (else this proves nothing), and every loss was recovered.
    assert!(stat("lost") > 0, "{}", capture.stats.last().unwrap());
    assert!(stat("h2_broken") > 0);
    assert_eq!(stat("h2_resyncs"), stat("h2_broken"));
    // The odd PING: the kernel's walk lost the client's requests, on each end, and found them.
    assert!(
        stat("h2_walk_lost") >= 2,
        "{}",
        capture.stats.last().unwrap()
    );
    assert_eq!(stat("h2_walk_resyncs"), stat("h2_walk_lost"));
    // Nothing invented: each side's exchanges are requests that happened, with their status,
    // and the body sizes of those seen whole are exact.
    let made: Vec<(String, u16)> = ["burst", "after"]
        .iter()
        .flat_map(|k| report[k].as_array().unwrap().iter())
        .map(|r| {
            (
                r[0].as_str().unwrap().to_string(),
                r[1].as_u64().unwrap() as u16,
            )
        })
        .collect();
    let logged: Vec<(String, u16)> = nginx
        .access_keys()
        .into_iter()
        .map(|(_, target, status)| (target, status))
        .collect();
    for (pid, truth) in [(client.id(), &made), (nginx.worker, &logged)] {
        let mut left = truth.clone();
        // Paths first; then a path the lost compression table hid (`{unknown}`, as
        // documented) must still be a request that happened, with its status.
        let lines = capture.of(pid);
        let (hidden, known): (Vec<&support::Line>, Vec<&support::Line>) =
            lines.iter().copied().partition(|l| l.target == "{unknown}");
        for l in known.into_iter().chain(hidden) {
            let i = left
                .iter()
                .position(|(t, s)| (*t == l.target || l.target == "{unknown}") && *s == l.status)
                .unwrap_or_else(|| panic!("invented: {l:?}"));
            left.remove(i);
            if l.incomplete.is_none() && l.target != "{unknown}" {
                let size = if l.target == "/big.bin" { 1 << 20 } else { 11 };
                assert_eq!(l.resp_body, size, "{l:?}");
            }
        }
        // Every request after the burst, exactly.
        let after: Vec<_> = capture
            .of(pid)
            .iter()
            .filter(|l| l.target.starts_with("/ka?after="))
            .map(|l| {
                (
                    l.target.clone(),
                    l.status,
                    l.resp_body,
                    l.incomplete.clone(),
                )
            })
            .collect();
        let want: Vec<_> = (0..20)
            .map(|n| (format!("/ka?after={n}"), 200, 11, None))
            .collect();
        assert_eq!(after, want, "pid {pid}:\n{}", capture.stdout);
    }
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

/// A server that answers each upload as soon as its headers arrive (END_STREAM included) and
/// only then reads the body, as grpc-go does for an unknown method: both sides report each
/// stream once, when its request ends, with the whole upload. Four 1 MiB uploads at a time on
/// one connection, so the held streams interleave. The oracles: h2load's own count of
/// requests that succeeded (its uploads sent whole, END_STREAM included) and Node's count of
/// the body bytes it delivered for each stream. Before held streams, each side closed the
/// exchange at the answer's END_STREAM and dropped the rest of the body without a count
/// (req_body 16 384 to 65 535 of 1 048 583, seen with the binary of 510e5ab).
#[test]
fn uploads_answered_before_they_end_are_whole_on_both_sides_h2c() {
    uploads_answered_before_they_end_are_whole(false);
}

/// The same over TLS: h2load through the system's libssl, Node through its own OpenSSL.
#[test]
fn uploads_answered_before_they_end_are_whole_on_both_sides_over_tls() {
    uploads_answered_before_they_end_are_whole(true);
}

fn uploads_answered_before_they_end_are_whole(tls: bool) {
    require_privileges!();
    let node = "node";
    if Command::new(node).arg("--version").output().is_err() {
        eprintln!("skipped: no node on PATH (.ci/run installs Node.js)");
        return;
    }
    let _guard = serial();
    const UPLOADS: usize = 8;
    const SIZE: usize = (1 << 20) + 7;
    let dir = tempfile::tempdir().unwrap();
    let upload = dir.path().join("upload.bin");
    std::fs::write(&upload, support::pseudo_random(SIZE)).unwrap();
    let pki = support::pki::Pki::new(dir.path());
    let port = free_port().to_string();
    let script = support_file("h2_early.js").display().to_string();
    let agent = Agent::start(&["--comm", "node", "--comm", "h2load"]);
    let mut args = vec![script.as_str(), port.as_str()];
    if tls {
        args.extend([pki.server_key.as_str(), pki.server_cert.as_str()]);
    }
    let mut server = Command::new(node)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server_out = std::io::BufReader::new(server.stdout.take().unwrap());
    support::wait_for_line(&mut server_out, "ready");
    if tls {
        // The first node gets its executable hooked (tests/tls.rs says why to wait); a node
        // built against the system's libssl was hooked at start.
        let exe = std::fs::read_link(format!("/proc/{}/exe", server.id())).unwrap();
        let inside =
            netsonde::probes::libs::symbol_offsets(&exe, &["SSL_write"]).unwrap()[0].is_some();
        if inside {
            agent.wait_for_log("OpenSSL inside the executable");
        }
    }
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://127.0.0.1:{port}/early");
    let uploads = UPLOADS.to_string();
    let (client, report) = h2load(&[
        "-n",
        &uploads,
        "-c",
        "1",
        "-m",
        "4",
        "-d",
        &upload.display().to_string(),
        &url,
    ]);
    assert!(
        report.contains(&format!("{UPLOADS} 2xx")),
        "h2load itself: {report}"
    );
    // Node prints a stream's line at its body's end; then let it see the close before it goes.
    use std::io::BufRead as _;
    let read: Vec<String> = (&mut server_out)
        .lines()
        .take(UPLOADS)
        .map_while(Result::ok)
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let server_pid = server.id();
    drop(server.stdin.take());
    let _ = server.wait();
    let capture = agent.stop();

    assert_eq!(read, vec![format!("read POST /early {SIZE}"); UPLOADS]);
    for (who, pid) in [("client", client), ("server", server_pid)] {
        let seen: Vec<_> = capture
            .of(pid)
            .iter()
            .map(|l| {
                (
                    l.method.clone(),
                    l.target.clone(),
                    l.status,
                    l.req_body,
                    l.resp_body,
                    l.incomplete.clone(),
                    l.tls,
                )
            })
            .collect();
        let expected = (
            "POST".to_string(),
            "/early".to_string(),
            200,
            SIZE as u64,
            6,
            None,
            tls,
        );
        assert_eq!(seen, vec![expected; UPLOADS], "{who}:\n{}", capture.stdout);
    }
    for stat in ["lost", "h2_broken", "h2_lost_streams", "h2_walk_lost"] {
        assert_eq!(capture.final_stat(stat), Some(0), "{stat}");
    }
}

/// curl's `--http2` on an http:// URL sends HTTP/1.1 with `Upgrade: h2c`; hypercorn answers
/// 101 and then HTTP/2, where the request is stream 1. One exchange per request, as HTTP/2.
#[test]
fn an_h2c_upgrade_is_followed_into_http2() {
    require_privileges!();
    let _guard = serial();
    let server = Hypercorn::start();
    let port = server.port;
    // hypercorn serves from a worker process: --pid covers the tree.
    let agent = Agent::start(&["--comm", "curl", "--pid", &server.child.id().to_string()]);
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let expected = [("/up", 200, 15), ("/missing", 404, 9)];
    let clients: Vec<u32> = expected
        .iter()
        .map(|(path, ..)| curl(&["--http2", &url(path)]))
        .collect();
    // hypercorn writes its access log after the response: wait for both lines.
    let access = server.access_log_when(|log| log.lines().count() >= 2);
    let capture = agent.stop();
    drop(server);
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

/// hypercorn (a Python server, h2 under asyncio) serving tiny to 1 MiB responses in pieces over
/// h2c, to h2load one stream at a time and eight at once: every request in hypercorn's access
/// log is one server exchange with the bytes it logged, every request h2load made one client
/// exchange with the size it asked for.
#[test]
fn hypercorn_mixed_sizes_are_exact() {
    require_privileges!();
    let _guard = serial();
    let server = Hypercorn::start();
    let port = server.port;
    let agent = Agent::start(&["--comm", "h2load", "--pid", &server.child.id().to_string()]);
    let sizes = [100, 3_000, 12_000, 60_000, 200_000, 1 << 20];
    let urls: Vec<String> = sizes
        .iter()
        .map(|n| format!("http://127.0.0.1:{port}/bytes/{n}"))
        .collect();
    let n = urls.len() * 8;
    let mut clients = Vec::new();
    for streams in ["1", "8"] {
        let count = n.to_string();
        let mut args = vec!["-n", &count, "-c", "2", "-m", streams];
        args.extend(urls.iter().map(String::as_str));
        clients.push(h2load(&args).0);
    }
    // hypercorn writes its access log after each response: wait for every line.
    let access = server.access_log_when(|log| log.lines().count() >= 2 * n);
    let capture = agent.stop();
    drop(server);
    // "GET /bytes/100 2" 200 100
    let mut logged: Vec<(String, String, u16, u64)> = access
        .lines()
        .filter_map(|l| {
            let request = l.split('"').nth(1)?;
            let mut after = l.split('"').nth(2)?.split_whitespace();
            let status = after.next()?.parse().ok()?;
            let body = after.next()?.parse().ok()?;
            let mut parts = request.split(' ');
            Some((parts.next()?.into(), parts.next()?.into(), status, body))
        })
        .collect();
    logged.sort();
    assert_eq!(logged.len(), 2 * n);
    let mut served: Vec<_> = capture
        .lines
        .iter()
        .filter(|l| l.role == "server")
        .map(|l| (l.method.clone(), l.target.clone(), l.status, l.resp_body))
        .collect();
    served.sort();
    assert_eq!(served, logged, "{}", capture.stats.last().unwrap());
    for pid in clients {
        let lines = capture.of(pid);
        assert_eq!(lines.len(), n);
        for l in lines {
            let size: u64 = l.target.rsplit('/').next().unwrap().parse().unwrap();
            assert_eq!(
                (l.status, l.resp_body, l.incomplete.as_deref()),
                (200, size, None)
            );
        }
    }
    for stat in ["lost", "h2_broken", "h2_walk_lost", "h2_lost_streams"] {
        assert_eq!(capture.final_stat(stat), Some(0), "{stat}");
    }
}

/// A request the server never answers, given up by the client (curl's `--max-time`, exit code
/// 28): the client and the server each report one failed exchange (`no_response`, no status
/// invented) once the connection closes; a request answered before it is exact. The oracles:
/// curl's exit codes and hypercorn's access log (a request it sent nothing to has no status).
#[test]
fn a_request_never_answered_is_a_failed_exchange_on_both_sides() {
    require_privileges!();
    let _guard = serial();
    let server = Hypercorn::start();
    let port = server.port;
    let agent = Agent::start(&["--comm", "curl", "--pid", &server.child.id().to_string()]);
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let answered = curl(&["--http2-prior-knowledge", &url("/bytes/100")]);
    let mut given_up = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--http2-prior-knowledge",
            "--max-time",
            "3",
        ])
        .arg(url("/hang"))
        .spawn()
        .unwrap();
    let status = given_up.wait().unwrap();
    assert_eq!(status.code(), Some(28), "curl: operation timed out");
    // hypercorn logs each request once it is over, and closes its end once it reads the
    // client's: wait for both before stopping.
    let access =
        server.access_log_when(|log| log.lines().count() >= 2 && connections_of(port).is_empty());
    let capture = agent.stop();
    drop(server);
    let logged: Vec<&str> = access
        .lines()
        .filter_map(|l| Some(l.split_once("] \"")?.1.split(" \"-\"").next()?.trim()))
        .collect();
    assert_eq!(
        logged,
        ["GET /bytes/100 2\" 200 100", "GET /hang 2\" - -"],
        "{access}"
    );
    let seen = |pid: u32| -> Vec<(String, u16, Option<String>)> {
        capture
            .of(pid)
            .iter()
            .map(|l| (l.target.clone(), l.status, l.incomplete.clone()))
            .collect()
    };
    assert_eq!(
        seen(answered),
        [("/bytes/100".to_string(), 200, None)],
        "{}",
        capture.stdout
    );
    assert_eq!(
        seen(given_up.id()),
        [("/hang".to_string(), 0, Some("no_response".to_string()))],
        "{}",
        capture.stdout
    );
    // hypercorn answers from a worker process of its own: its lines are the server's.
    let mut served: Vec<_> = capture
        .lines
        .iter()
        .filter(|l| l.role == "server")
        .map(|l| (l.target.clone(), l.status, l.incomplete.clone()))
        .collect();
    served.sort();
    assert_eq!(
        served,
        [
            ("/bytes/100".to_string(), 200, None),
            ("/hang".to_string(), 0, Some("no_response".to_string()))
        ],
        "{}",
        capture.stdout
    );
    assert_eq!(capture.final_stat("unanswered_requests"), Some(2));
}

/// hypercorn serving `asgi_app:app` (tests/support) on a free loopback port, its access log in
/// a directory of its own; killed when dropped.
struct Hypercorn {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Hypercorn {
    fn start() -> Hypercorn {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let port = free_port();
        let child = Command::new(python())
            .args(["-m", "hypercorn", "--access-logfile"])
            .arg(&log)
            .args(["--bind", &format!("127.0.0.1:{port}"), "asgi_app:app"])
            .current_dir(support_file(""))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run hypercorn (pip install hypercorn)");
        wait_for_port(&format!("127.0.0.1:{port}"));
        Hypercorn {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// Its access log once `ready` says it is (hypercorn writes a line after each request
    /// ends), or as it is after 10 s.
    fn access_log_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if ready(&text) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Hypercorn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The TCP connections of the server on `port` that are still open at its end (established,
/// or closed by the peer only), as `ss` lists them.
fn connections_of(port: u16) -> String {
    let out = Command::new("ss")
        .args(["-Htn", "state", "established", "state", "close-wait"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .expect("run ss (iproute2)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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
