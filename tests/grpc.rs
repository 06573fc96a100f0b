//! gRPC end to end: a grpcio server and client (Python, raw-bytes methods, no .proto), unary
//! and streaming calls with OK and error statuses, captured by the real agent on both sides,
//! checked call by call against what grpcio itself reports, and checked again in what a real
//! collector receives (RPC spans and the `rpc.*.call.duration` metrics).

mod support;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::{Agent, collector::Collector, python, serial, support_file, wait_timeout};

/// (method, status, request messages, response messages), sorted.
type Calls = Vec<(String, String, String, String)>;

fn from_json(text: &str) -> Calls {
    let list: Value = serde_json::from_str(text.trim()).expect("grpc_peer.py's JSON");
    let mut calls: Calls = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["method"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["requests"].to_string(),
                c["responses"].to_string(),
            )
        })
        .collect();
    calls.sort();
    calls
}

/// `pid`'s exchanges as gRPC calls (method, status, message counts), sorted; `case` names the
/// run when one is not gRPC.
fn seen_calls(capture: &support::Capture, pid: u32, case: &str) -> Calls {
    let mut calls: Calls = capture
        .of(pid)
        .iter()
        .map(|l| {
            let (status, req, resp) = l
                .grpc
                .clone()
                .unwrap_or_else(|| panic!("{case}: not seen as gRPC: {l:?}\n{}", capture.stdout));
            let method = l.target.trim_start_matches('/').to_string();
            (method, status, req, resp)
        })
        .collect();
    calls.sort();
    calls
}

fn peer(args: &[&str]) -> Child {
    Command::new(python())
        .arg(support_file("grpc_peer.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run grpc_peer.py (pip install grpcio)")
}

/// One of the two gRPC implementations, both serving and calling `demo.Echo`.
#[derive(Debug, Clone, Copy)]
enum Impl {
    /// grpcio (Python, gRPC's C core).
    Grpcio,
    /// grpc-go.
    GrpcGo,
}

impl Impl {
    /// The program and its first arguments.
    fn command(self) -> Vec<String> {
        match self {
            Impl::Grpcio => vec![
                python().to_string(),
                support_file("grpc_peer.py").display().to_string(),
            ],
            Impl::GrpcGo => vec![support::go_grpc_peer().unwrap().display().to_string()],
        }
    }
}

/// A server of `imp` on a free port: the child and the port.
fn start_server(imp: Impl) -> (Child, String) {
    let cmd = imp.command();
    let mut server = Command::new(&cmd[0])
        .args(&cmd[1..])
        .arg("server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start the {imp:?} server: {e}"));
    let mut port = String::new();
    BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut port)
        .unwrap();
    (server, port.trim().to_string())
}

/// A client of `imp` for `port`, exec'd by a shell that waits for a line first: its pid is
/// known before it connects, so its connection is seen from the first byte.
fn start_client(imp: Impl, port: &str, sizes: &str) -> Child {
    let script = format!(
        "read go; exec {} client {port} {sizes}",
        imp.command().join(" ")
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The JSON a peer printed last, once it exits.
fn report(mut child: Child) -> String {
    assert!(wait_timeout(&mut child, Duration::from_secs(120)).success());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out.lines().last().unwrap_or_default().to_string()
}

/// gRPC at real sizes, between grpcio and grpc-go in both roles: for messages of 1 KiB, 64 KiB,
/// 1 MiB and 4 MiB, two unary calls and one bidirectional stream of three messages each way.
/// grpcio sends megabytes in one `sendmsg` of dozens of iovecs, grpc-go in 32 KiB writes; the
/// kernel follows the frames (and each message's 5-byte prefix) through all of it. Each side's
/// calls match what that peer reports (method, status, message counts), and each body is its
/// messages' bytes exactly.
#[test]
fn grpc_at_real_sizes_between_grpcio_and_grpc_go() {
    require_privileges!();
    if let Err(why) = support::go_grpc_peer() {
        eprintln!("skipped: {why}");
        return;
    }
    let _guard = serial();
    const SIZES: [u64; 4] = [1 << 10, 64 << 10, 1 << 20, 4 << 20];
    let sizes = SIZES.map(|s| s.to_string()).join(",");
    for (server_impl, client_impl) in [(Impl::Grpcio, Impl::GrpcGo), (Impl::GrpcGo, Impl::Grpcio)] {
        let (mut server, port) = start_server(server_impl);
        let mut client = start_client(client_impl, &port, &sizes);
        let (server_pid, client_pid) = (server.id(), client.id());
        let agent = Agent::start(&[
            "--pid",
            &server_pid.to_string(),
            "--pid",
            &client_pid.to_string(),
        ]);
        client.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let client_json = report(client);
        drop(server.stdin.take());
        let server_json = report(server);
        std::thread::sleep(Duration::from_millis(300));
        let capture = agent.stop();
        let case = format!("{server_impl:?} server, {client_impl:?} client");
        // What each peer reports, and the bodies the messages make (5-byte prefix each).
        for (pid, json) in [(client_pid, &client_json), (server_pid, &server_json)] {
            let reported = from_json(json);
            assert_eq!(reported.len(), 3 * SIZES.len(), "{case}: {json}");
            let lines = capture.of(pid);
            let seen = seen_calls(&capture, pid, &case);
            assert_eq!(seen, reported, "{case}, pid {pid}:\n{}", capture.stdout);
            let mut bodies: Vec<(u64, u64)> =
                lines.iter().map(|l| (l.req_body, l.resp_body)).collect();
            bodies.sort();
            let mut expected: Vec<(u64, u64)> = SIZES
                .iter()
                .flat_map(|s| {
                    let one = s + 5;
                    [(one, one), (one, one), (3 * one, 3 * one)]
                })
                .collect();
            expected.sort();
            assert_eq!(bodies, expected, "{case}, pid {pid}");
        }
        for stat in ["lost", "h2_broken", "h2_walk_lost", "h2_lost_streams"] {
            assert_eq!(capture.final_stat(stat), Some(0), "{case}: {stat}");
        }
    }
}

#[test]
fn grpc_calls_match_what_grpcio_reports_and_reach_otlp_as_rpcs() {
    require_privileges!();
    let _guard = serial();
    let collector = Collector::start();
    let mut server = peer(&["server"]);
    let mut port = String::new();
    BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut port)
        .unwrap();
    let port = port.trim().to_string();
    // The client is exec'd by a shell that waits for a line: its pid is known before it
    // connects, and its connection is seen from the first byte (HPACK needs that).
    let script = format!(
        "read go; exec {} {} client {port}",
        python(),
        support_file("grpc_peer.py").display()
    );
    let mut client = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Only these two are traced: the collector's sink is Python too.
    let (server_pid, client_pid) = (server.id(), client.id());
    let agent = Agent::start_with_env(
        &[
            "--pid",
            &server_pid.to_string(),
            "--pid",
            &client_pid.to_string(),
            "--exporter",
            "console",
            "--exporter",
            "otlp",
            "--otlp-endpoint",
            &collector.grpc_url(),
        ],
        &[
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
            // Both generations of RPC attributes.
            ("OTEL_SEMCONV_STABILITY_OPT_IN", "rpc/dup"),
        ],
    );
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(wait_timeout(&mut client, Duration::from_secs(60)).success());
    let mut client_json = String::new();
    client
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut client_json)
        .unwrap();
    drop(server.stdin.take());
    assert!(wait_timeout(&mut server, Duration::from_secs(30)).success());
    let mut server_json = String::new();
    server
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut server_json)
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let capture = agent.stop();

    let seen = |pid: u32| seen_calls(&capture, pid, "grpcio");
    let client_calls = from_json(&client_json);
    assert_eq!(client_calls.len(), 8);
    assert_eq!(seen(client_pid), client_calls, "{}", capture.stdout);
    // The server's handlers never see the unknown method: grpcio answers UNIMPLEMENTED itself
    // (a trailers-only response), and netsonde sees that call too.
    let mut server_calls = from_json(&server_json);
    server_calls.push((
        "demo.Echo/Nope".into(),
        "UNIMPLEMENTED".into(),
        "1".into(),
        "0".into(),
    ));
    server_calls.sort();
    assert_eq!(seen(server_pid), server_calls, "{}", capture.stdout);
    assert_eq!(capture.final_stat("h2_broken"), Some(0));

    // In OTLP: RPC spans named by method, RPC attributes, the RPC duration histograms.
    let received = collector.wait_until("the calls' spans and metrics", |r| {
        r.spans_of(server_pid).len() >= 8
            && r.spans_of(client_pid).len() >= 8
            && r.histogram_count("rpc.server.call.duration", server_pid) >= 8
            && r.histogram_count("rpc.client.call.duration", client_pid) >= 8
    });
    assert_eq!(received.spans_of(server_pid).len(), 8);
    assert_eq!(
        received.histogram_count("rpc.server.call.duration", server_pid),
        8
    );
    assert_eq!(
        received.histogram_count("rpc.client.call.duration", client_pid),
        8
    );
    assert_eq!(
        received.histogram_count("http.server.request.duration", server_pid),
        0,
        "a gRPC call is an RPC, not an HTTP request"
    );
    let span = |pid: u32, method: &str, status: &str| {
        received
            .spans_of(pid)
            .into_iter()
            .find(|s| {
                s.name == method && s.attr("rpc.response.status_code").as_deref() == Some(status)
            })
            .unwrap_or_else(|| panic!("no span {method} {status} for {pid}"))
    };
    let ok = span(server_pid, "demo.Echo/Count", "OK");
    assert_eq!(ok.body["kind"], "SPAN_KIND_SERVER");
    assert_eq!(ok.attr("rpc.system.name").as_deref(), Some("grpc"));
    assert_eq!(ok.attr("rpc.method").as_deref(), Some("demo.Echo/Count"));
    assert_eq!(ok.attr("network.protocol.version").as_deref(), Some("2"));
    assert_eq!(
        ok.attr("netsonde.rpc.response.messages").as_deref(),
        Some("3")
    );
    assert!(ok.body["status"].get("code").is_none());
    // NOT_FOUND is the caller's failure: an error for the client span only.
    let server_nf = span(server_pid, "demo.Echo/Say", "NOT_FOUND");
    assert!(server_nf.attr("error.type").is_none());
    let client_nf = span(client_pid, "demo.Echo/Say", "NOT_FOUND");
    assert_eq!(client_nf.body["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(client_nf.attr("error.type").as_deref(), Some("NOT_FOUND"));
    assert_eq!(client_nf.body["status"]["code"], "STATUS_CODE_ERROR");
    assert_eq!(client_nf.attr("server.port"), Some(port.clone()));
    // rpc/dup: the experimental attributes too.
    assert_eq!(client_nf.attr("rpc.system").as_deref(), Some("grpc"));
    assert_eq!(client_nf.attr("rpc.service").as_deref(), Some("demo.Echo"));
    assert_eq!(client_nf.attr("rpc.grpc.status_code").as_deref(), Some("5"));
    let internal = span(server_pid, "demo.Echo/Fail", "INTERNAL");
    assert_eq!(internal.attr("error.type").as_deref(), Some("INTERNAL"));
    assert_eq!(internal.body["status"]["code"], "STATUS_CODE_ERROR");
}

/// One gRPC-Go server and client over TLS (the peer's `GRPC_PEER_TLS_*`), run to their end:
/// each side's pid and what it reported. With `agent` (a run's first pair), the client starts
/// once that agent has hooked the peer at the server's exec.
fn go_tls_pair(peer: &Path, pki: &support::pki::Pki, agent: Option<&Agent>) -> [(u32, String); 2] {
    let mut server = Command::new(peer)
        .arg("server")
        .env("GRPC_PEER_TLS_CERT", &pki.server_cert)
        .env("GRPC_PEER_TLS_KEY", &pki.server_key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut port)
        .unwrap();
    if let Some(agent) = agent {
        agent.wait_for_log(&format!("TLS: hooked {}", peer.display()));
    }
    let client = Command::new(peer)
        .args(["client", port.trim()])
        .env("GRPC_PEER_TLS_CA", &pki.ca)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let client_pid = client.id();
    let client_json = report(client);
    drop(server.stdin.take());
    let server_pid = server.id();
    let server_json = report(server);
    [(client_pid, client_json), (server_pid, server_json)]
}

/// The pair's calls, as each side of it reports them, against what the agent saw of that side.
fn assert_go_tls_pair_seen(capture: &support::Capture, pair: &[(u32, String); 2]) {
    for (side, (pid, json)) in ["client", "server"].into_iter().zip(pair) {
        let mut reported = from_json(json);
        if side == "server" {
            // The handlers never see the unknown method: grpc-go answers UNIMPLEMENTED
            // itself, and netsonde sees that call too.
            reported.push((
                "demo.Echo/Nope".into(),
                "UNIMPLEMENTED".into(),
                "1".into(),
                "0".into(),
            ));
            reported.sort();
        }
        assert_eq!(reported.len(), 8, "{side}: {json}");
        let lines = capture.of(*pid);
        let seen = seen_calls(capture, *pid, side);
        // grpc-go's server answers the unknown method on its HEADERS, without waiting for the
        // request message, and resets the stream after its answer: the client writes that
        // message only if the answer has not come back first (else it resets the stream), and
        // one that reaches the server after the server's reset is not the stream's. So either
        // side may see the call with one request message or none, whatever the client reports
        // (it counts what it asked to send).
        let unanswered_early = |c: &(String, String, String, String)| {
            c.0 == "demo.Echo/Nope" && c.1 == "UNIMPLEMENTED" && c.3 == "0"
        };
        if let Some(on_wire) = seen.iter().find(|c| unanswered_early(c) && c.2 == "0") {
            let nope = reported.iter_mut().find(|c| unanswered_early(c)).unwrap();
            *nope = on_wire.clone();
            reported.sort();
        }
        assert_eq!(seen, reported, "{side} {pid}:\n{}", capture.stdout);
        assert!(lines.iter().all(|l| l.tls), "{side}:\n{}", capture.stdout);
    }
}

/// The name the agent's `--comm` takes for the Go peer.
fn comm_of(peer: &Path) -> String {
    let name = peer.file_name().unwrap().to_str().unwrap();
    name.chars().take(15).collect()
}

/// gRPC-Go over TLS on both sides (the same peer, `GRPC_PEER_TLS_*`): its crypto/tls is read
/// through the Go uprobes (the peer is built stripped: the functions come from Go's own
/// function table), the HTTP/2 inside found by its preface, and each side's calls match what
/// that side reports.
#[test]
fn grpc_go_over_tls_is_read_in_plaintext_on_both_sides() {
    go_tls_pairs_are_seen(1);
}

/// Many gRPC-Go pairs over TLS, one after the other. At a connection's end, one goroutine of
/// the peer may close it while another is still decrypting the last frames it received (a
/// control frame of the teardown, after every call): Go's close(2) waits for the read's
/// syscall, not for `Read` to return. That plaintext arrives after its socket's close, and is
/// counted as `tls_after_close`, not as plaintext of a socket never seen (`tls_no_socket`,
/// which before the distinction was made showed up in about 2 % of these pairs), nor put on
/// another connection that took the fd. Every call of every pair is still seen.
#[test]
fn grpc_go_connections_closed_while_a_read_returns_lose_no_call() {
    go_tls_pairs_are_seen(200);
}

/// Runs `pairs` gRPC-Go pairs over TLS one after the other under one agent, and checks each
/// side of each against its own report, and that no plaintext went without its socket.
fn go_tls_pairs_are_seen(pairs: usize) {
    require_privileges!();
    let peer = match support::go_grpc_peer() {
        Ok(peer) => peer,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::new(dir.path());
    let agent = Agent::start(&["--comm", &comm_of(&peer)]);
    let runs: Vec<_> = (0..pairs)
        .map(|i| go_tls_pair(&peer, &pki, (i == 0).then_some(&agent)))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let capture = agent.stop();
    for pair in &runs {
        assert_go_tls_pair_seen(&capture, pair);
    }
    eprintln!(
        "{pairs} pairs: tls_after_close={:?}",
        capture.final_stat("tls_after_close")
    );
    assert_eq!(capture.final_stat("h2_connections"), Some(2 * pairs as u64));
    for stat in [
        "tls_no_socket",
        "not_http",
        "lost",
        "h2_broken",
        "h2_walk_lost",
        "h2_lost_streams",
    ] {
        assert_eq!(capture.final_stat(stat), Some(0), "{stat}");
    }
}
