//! HTTP/2 without TLS, end to end: curl with prior knowledge and h2load against nginx's h2c
//! listener, captured by the real agent, checked against nginx's access log and h2load's
//! counts. (Issue 5 in progress: TLS, gRPC and the h2c upgrade come next.)

mod support;

use support::{Agent, Nginx, curl, key, serial};

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

#[test]
#[ignore = "known gap (issue 5): a read that carries more HTTP/2 frames than the captured \
            prefix (capture.payload_bytes) loses the frame headers after it, so the receiving \
            side of a large download is marked broken (counted); the kernel side needs to walk \
            frame headers for HTTP/2 sockets"]
fn a_large_download_over_http2_is_seen_by_both_sides() {
    require_privileges!();
    let _guard = serial();
    let nginx = Nginx::start();
    let agent = Agent::start(&["--comm", "curl", "--comm", "nginx"]);
    let client = curl(&["--http2-prior-knowledge", &nginx.h2_url("/big.bin")]);
    let capture = agent.stop();
    assert_eq!(capture.of(client).len(), 1, "{}", capture.stdout);
    assert_eq!(capture.of(client)[0].resp_body, 1 << 20);
    assert_eq!(capture.of(nginx.worker)[0].resp_body, 1 << 20);
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
