//! The kernel layer (tracepoints only, as on this host) against the kernel's own counters.
//!
//! A client and a server talk over a veth pair between two network namespaces; nftables rules
//! lose some of their packets. Each side's reported retransmits must equal its namespace's
//! TcpRetransSegs, its drops by reason the dropping rule's own counter; a lost SYN must show
//! as the kernel's one-second SYN retransmit timeout in the connect time, and an accept()
//! held back as the wait in the accept time. Every exchange carries its packets' device and
//! receive-path times.

mod support;

use std::{
    io::{BufReader, Write},
    process::{Child, ChildStdout, Stdio},
    time::{Duration, Instant},
};

use support::{
    Agent, comm_of,
    netns::{self, NetPair, SERVER_IP},
    otlp_json::{counted, histogram, points, points_of},
    python, serial, skip_reason, support_file, wait_for_line, wait_timeout,
};

const PORT: &str = "8080";

macro_rules! require {
    () => {
        if let Some(why) = skip_reason().or_else(netns::missing_tools) {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// A process in a namespace, killed if the test fails before it ends.
struct Peer {
    child: Child,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(pair: &NetPair, ns: &str, program: &str, args: &[&str]) -> (Peer, BufReader<ChildStdout>) {
    let mut child = pair
        .command(ns, program, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn in namespace");
    let out = BufReader::new(child.stdout.take().unwrap());
    (Peer { child }, out)
}

/// The test HTTP server (`http_server.py`) in the server namespace, listening on `PORT`.
fn http_server(pair: &NetPair) -> (Peer, BufReader<ChildStdout>) {
    let server_py = support_file("http_server.py").display().to_string();
    let (server, mut out) = spawn(pair, &pair.server, python(), &[&server_py, SERVER_IP, PORT]);
    wait_for_line(&mut out, &format!("ready {PORT}"));
    (server, out)
}

fn say(peer: &mut Peer) {
    let stdin = peer.child.stdin.as_mut().unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
}

fn agent(otlp: &std::path::Path) -> Agent {
    let comm = comm_of(python());
    Agent::start(&[
        "--comm",
        &comm,
        "--comm",
        "curl",
        "--exporter",
        "console",
        "--exporter",
        "file",
        "--file-path",
        &otlp.display().to_string(),
    ])
}

#[test]
fn retransmits_and_drops_match_the_kernels_own_counters() {
    require!();
    let _guard = serial();
    let pair = NetPair::create().expect("network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let otlp = dir.path().join("otlp.jsonl");
    let agent = agent(&otlp);
    let client_py = support_file("raw_client.py").display().to_string();
    let (server, _server_out) = http_server(&pair);
    const ROUNDS: usize = 16;
    let rounds = ROUNDS.to_string();
    let (mut client, mut client_out) = spawn(
        &pair,
        &pair.client,
        python(),
        &[&client_py, "rounds", SERVER_IP, PORT, &rounds],
    );
    wait_for_line(&mut client_out, "connected");

    // Every fourth TCP packet arriving in either namespace is dropped: both sides lose
    // packets and retransmit. The handshake is done and the close comes after the rules go.
    let retrans = |ns: &str| pair.nstat(ns, "TcpRetransSegs");
    let before = (retrans(&pair.client), retrans(&pair.server));
    let rule = |port_match: &str| {
        format!(
            "table inet nsd {{\n chain input {{\n  type filter hook input priority 0;\n  \
             {port_match} {PORT} numgen inc mod 4 == 0 counter drop\n }}\n}}\n"
        )
    };
    pair.nft(&pair.client, &rule("tcp sport"));
    pair.nft(&pair.server, &rule("tcp dport"));
    say(&mut client);
    wait_for_line(&mut client_out, "done");
    let dropped = (
        pair.nft_counted(&pair.client, "nsd"),
        pair.nft_counted(&pair.server, "nsd"),
    );
    pair.nft(&pair.client, "delete table inet nsd");
    pair.nft(&pair.server, "delete table inet nsd");
    pair.wait_until_acked(Duration::from_secs(30));
    let retransmitted = (
        retrans(&pair.client) - before.0,
        retrans(&pair.server) - before.1,
    );
    say(&mut client);
    assert!(wait_timeout(&mut client.child, Duration::from_secs(30)).success());
    // Let the server see the close before it goes.
    std::thread::sleep(Duration::from_millis(300));
    let (client_pid, server_pid) = (client.child.id(), server.child.id());
    drop(server);
    let capture = agent.stop();
    let text = std::fs::read_to_string(&otlp).unwrap();
    // The node's NETFILTER_DROP count, from the kfree_skb program's own map of drops by reason:
    // a run the kernel did not give the program (docs/kernel-layer.md) is missing there too,
    // and only such a run may leave a connection's drops short.
    let node_netfilter = counted(
        &points_of(
            &text,
            ("process.executable.name", "netsonde"),
            "netsonde.node.drops",
        ),
        Some(("netsonde.kernel.drop.reason", "NETFILTER_DROP")),
    );
    // Present, or the check below would pass whatever the connections got.
    assert!(
        node_netfilter > 0,
        "the agent's own metrics have no netsonde.node.drops for NETFILTER_DROP"
    );
    let runs_missed = (dropped.0 + dropped.1).saturating_sub(node_netfilter);
    eprintln!(
        "node: the program counted {node_netfilter} NETFILTER_DROP drops, the rules {}: {runs_missed} runs missed",
        dropped.0 + dropped.1
    );

    assert!(
        dropped.0 > 0 && dropped.1 > 0,
        "the rules dropped {dropped:?}"
    );
    assert!(
        retransmitted.0 > 0 && retransmitted.1 > 0,
        "retransmits {retransmitted:?}"
    );
    eprintln!(
        "notes for connections user space did not hold: {:?}",
        capture.final_stat("notes_unmatched")
    );
    eprintln!(
        "retransmits no note reported, counted at close: {:?}",
        capture.final_stat("retransmits_at_close")
    );
    let mut drops_short = 0;
    for (who, pid, dropped, retransmitted, peer_retransmitted) in [
        (
            "client",
            client_pid,
            dropped.0,
            retransmitted.0,
            retransmitted.1,
        ),
        (
            "server",
            server_pid,
            dropped.1,
            retransmitted.1,
            retransmitted.0,
        ),
    ] {
        let lines = capture.of(pid);
        assert_eq!(lines.len(), ROUNDS, "{who}:\n{}", capture.stdout);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l.target, format!("/items/{i}"), "{who}");
            assert_eq!(l.status, 200, "{who}");
            let (sent, received) = l.packets.expect("packets on every exchange");
            assert!(sent >= 1 && received >= 1, "{who} {l:?}");
            for layer in ["device_queue", "device_send", "receive"] {
                assert!(
                    l.kernel_ns.iter().any(|(k, ns)| k == layer && *ns > 0),
                    "{who} exchange {i} has no {layer} time: {l:?}"
                );
            }
        }
        eprintln!(
            "{who}: TcpRetransSegs +{retransmitted}, nftables dropped {dropped}, {} exchanges",
            lines.len()
        );
        // Retransmits are exact: a retransmit whose note the kernel did not deliver (it
        // sometimes does not run the program, docs/kernel-layer.md) is still counted from the
        // socket's own total when the connection closes.
        let reported = counted(&points(&text, pid, "netsonde.kernel.retransmits"), None);
        eprintln!("{who}: {reported} retransmits reported");
        assert_eq!(
            reported, retransmitted,
            "{who}: retransmits reported, TcpRetransSegs of its namespace"
        );
        // Drops have no such total: never extra, and short only by runs the program missed
        // (summed over both sides, below).
        let drops = points(&text, pid, "netsonde.kernel.drops");
        let netfilter = counted(
            &drops,
            Some(("netsonde.kernel.drop.reason", "NETFILTER_DROP")),
        );
        eprintln!("{who}: {netfilter} NETFILTER_DROP drops reported");
        assert!(
            netfilter <= dropped,
            "{who}: {netfilter} NETFILTER_DROP drops reported, the nftables rule counted {dropped}: {drops:?}"
        );
        drops_short += dropped - netfilter;
        // A retransmit whose original did arrive is a duplicate: the kernel drops it as
        // TCP_OLD_DATA or, wholly before the window, TCP_OLD_SEQUENCE (real drops, reported as
        // such). There can be no more of those than the peer's retransmits, and no other
        // reason.
        let old_data: u64 = ["TCP_OLD_DATA", "TCP_OLD_SEQUENCE"]
            .into_iter()
            .map(|reason| counted(&drops, Some(("netsonde.kernel.drop.reason", reason))))
            .sum();
        eprintln!("{who}: {old_data} duplicates dropped");
        assert!(
            old_data <= peer_retransmitted,
            "{who}: {old_data} duplicates dropped, the peer retransmitted {peer_retransmitted}"
        );
        assert_eq!(
            counted(&drops, None),
            netfilter + old_data,
            "{who}: other drop reasons: {drops:?}"
        );
        let exchanges_retransmits: u64 = lines.iter().map(|l| l.retransmits).sum();
        assert!(exchanges_retransmits <= retransmitted, "{who}");
    }
    // A drop the program saw reaches its connection: what the sides miss, the program missed.
    assert!(
        drops_short <= runs_missed,
        "{drops_short} NETFILTER_DROP drops the connections did not get, but the program missed \
         only {runs_missed} (it counted {node_netfilter} of the rules' {}): netsonde lost notes",
        dropped.0 + dropped.1
    );
}

#[test]
fn a_lost_syn_and_a_held_back_accept_show_in_connect_and_accept_times() {
    require!();
    let _guard = serial();
    let pair = NetPair::create().expect("network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let otlp = dir.path().join("otlp.jsonl");
    let agent = agent(&otlp);
    let server_py = support_file("accept_later.py").display().to_string();
    let (mut server, mut server_out) = spawn(
        &pair,
        &pair.server,
        python(),
        &[&server_py, SERVER_IP, PORT],
    );
    wait_for_line(&mut server_out, "ready");
    // The first SYN is lost: the client sends it again after the kernel's initial
    // retransmission timeout, one second (RFC 6298).
    pair.nft(
        &pair.server,
        &format!(
            "table inet nsd {{\n chain input {{\n  type filter hook input priority 0;\n  \
             tcp dport {PORT} tcp flags & (syn | ack) == syn numgen inc mod 2 == 0 counter drop\n \
             }}\n}}\n"
        ),
    );
    let url = format!("http://{SERVER_IP}:{PORT}/held");
    let mut curl = Peer {
        child: pair
            .command(&pair.client, "curl", &["-s", "-o", "/dev/null", &url])
            .spawn()
            .expect("curl"),
    };
    // Wait for the handshake to finish (the connection waits in the listen queue), then
    // hold the accept back a while longer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pair
        .sockets(&pair.server)
        .iter()
        .any(|(state, _)| state == "ESTAB")
    {
        assert!(Instant::now() < deadline, "the handshake never finished");
        std::thread::sleep(Duration::from_millis(10));
    }
    const HELD: Duration = Duration::from_millis(300);
    std::thread::sleep(HELD);
    say(&mut server);
    assert!(wait_timeout(&mut curl.child, Duration::from_secs(30)).success());
    assert!(wait_timeout(&mut server.child, Duration::from_secs(30)).success());
    let syns_dropped = pair.nft_counted(&pair.server, "nsd");
    let capture = agent.stop();
    let text = std::fs::read_to_string(&otlp).unwrap();

    assert_eq!(syns_dropped, 1);
    let client = capture.of(curl.child.id());
    assert_eq!(client.len(), 1, "{}", capture.stdout);
    assert_eq!(
        (client[0].target.as_str(), client[0].status),
        ("/held", 204)
    );
    let (count, seconds) = histogram(&points(
        &text,
        curl.child.id(),
        "netsonde.connection.connect.duration",
    ));
    assert_eq!(count, 1);
    eprintln!("connect with one lost SYN: {seconds} s");
    // One second of SYN timeout, plus a round trip on a local link.
    assert!(
        (1.0..1.25).contains(&seconds),
        "connect took {seconds} s with one lost SYN"
    );
    let (count, seconds) = histogram(&points(
        &text,
        server.child.id(),
        "netsonde.connection.accept.duration",
    ));
    assert_eq!(count, 1);
    eprintln!("accept held back {HELD:?}: waited {seconds} s");
    // At least the hold; at most the hold plus the 10 ms polling and Python's reaction.
    assert!(
        (HELD.as_secs_f64()..HELD.as_secs_f64() + 0.5).contains(&seconds),
        "the connection waited {seconds} s for accept(); it was held {HELD:?}"
    );
}

/// A qdisc that holds packets: the server's replies leave through a token bucket that lets
/// 2.5 MB/s through (`tbf`), so its packets wait in the queue and leave from the qdisc's timer,
/// later and maybe from another CPU. Each must still be timed in the device queue: netsonde
/// keeps a sent packet's record in its CPU's slot only while no qdisc holds it.
#[test]
fn packets_a_qdisc_holds_are_timed_in_the_device_queue() {
    require!();
    let _guard = serial();
    let pair = NetPair::create().expect("network namespaces");
    // A small send buffer keeps the server inside its write while the queue drains, so the
    // packets leave during the syscall that sent them (after it, their time is counted as
    // late, not timed).
    let wmem = pair
        .command(
            &pair.server,
            "sh",
            &[
                "-c",
                "echo '4096 16384 65536' > /proc/sys/net/ipv4/tcp_wmem",
            ],
        )
        .status()
        .expect("run sh");
    assert!(wmem.success());
    let tc = pair
        .command(
            &pair.server,
            "tc",
            &[
                "qdisc", "add", "dev", "veth0", "root", "tbf", "rate", "20mbit", "burst", "128kb",
                "latency", "5s",
            ],
        )
        .status();
    match tc {
        Ok(s) if s.success() => {}
        other => {
            eprintln!("skipped: tc could not add a tbf qdisc ({other:?})");
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let otlp = dir.path().join("otlp.jsonl");
    let agent = agent(&otlp);
    let (server, _server_out) = http_server(&pair);
    // At once, so that the server's threads send from both CPUs through the one qdisc, and
    // one CPU's run of the queue sends the other's packets.
    const DOWNLOADS: usize = 4;
    let url = format!("http://{SERVER_IP}:{PORT}/big");
    let curls: Vec<_> = (0..DOWNLOADS)
        .map(|_| {
            pair.command(&pair.client, "curl", &["-sS", "-o", "/dev/null", &url])
                .spawn()
                .expect("run curl")
        })
        .collect();
    for mut curl in curls {
        assert!(wait_timeout(&mut curl, Duration::from_secs(60)).success());
    }
    std::thread::sleep(Duration::from_millis(300));
    let server_pid = server.child.id();
    drop(server);
    let capture = agent.stop();
    let text = std::fs::read_to_string(&otlp).unwrap();

    let lines = capture.of(server_pid);
    assert_eq!(lines.len(), DOWNLOADS, "{}", capture.stdout);
    for l in &lines {
        assert_eq!((l.target.as_str(), l.status), ("/big", 200), "{l:?}");
        assert_eq!(l.resp_body, 1 << 20, "{l:?}");
    }
    let transmit = |points: Vec<serde_json::Value>, layer: Option<&str>| {
        points
            .into_iter()
            .filter(|p| {
                let attrs = &p["attributes"];
                support::otlp_json::attr(attrs, "network.io.direction").as_deref()
                    == Some("transmit")
                    && layer.is_none_or(|l| {
                        support::otlp_json::attr(attrs, "netsonde.kernel.layer").as_deref()
                            == Some(l)
                    })
            })
            .collect::<Vec<_>>()
    };
    let sent = counted(
        &transmit(points(&text, server_pid, "netsonde.kernel.packets"), None),
        None,
    );
    let (timed, seconds) = histogram(&transmit(
        points(&text, server_pid, "netsonde.kernel.layer.duration"),
        Some("device_queue"),
    ));
    let late = capture.final_stat("device_late").unwrap_or(0);
    eprintln!(
        "server: {sent} packets sent in its writes, {timed} timed in the device queue, \
         {seconds:.3} s in all; {late} started after their write returned"
    );
    // 4 MiB at 2.5 MB/s: the qdisc holds almost every packet. Only packets queued during a
    // write count (those TCP sends after it are no syscall's), and those that leave after their
    // write has returned (the last ones of each download) are not timed: at most a send
    // buffer's worth per download. (The bucket's burst holds a whole 64 KiB TSO packet: a
    // smaller one makes tbf split it into segments, new packets the record of the original
    // does not follow, and their queue time is not reported.)
    assert!(sent >= DOWNLOADS as u64 * 8, "{sent} packets");
    // Every packet is timed, or counted as started after its write returned (the counter
    // counts the start and the driver's end of such a packet: at least one per packet).
    assert!(
        timed <= sent && timed + late >= sent,
        "{timed} of {sent} sent packets timed in the device queue, {late} counted late"
    );
    assert!(
        timed * 4 >= sent * 3,
        "{timed} of {sent} sent packets timed in the device queue"
    );
    // Behind at least the bytes the bucket lets through before it, each packet waits: 1 448
    // bytes at 2.5 MB/s are 0.58 ms.
    let mean = seconds / timed as f64;
    assert!(mean >= 0.000_5, "{mean} s per packet in the queue");
}

/// Packets that arrived before the agent started have no arrival stamp: their reads are
/// counted as `receive_untimed` (neither timed nor counted in the syscall's packets), and every
/// packet that arrives while the agent runs is stamped and claimed, so it is not.
#[test]
fn packets_read_without_an_arrival_stamp_are_counted() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let _guard = serial();
    const EARLY: usize = 3;
    const LATE: usize = 8;
    let script = support_file("queued_reads.py").display().to_string();
    let mut pair = Peer {
        child: std::process::Command::new(python())
            .args([script.as_str(), &EARLY.to_string(), &LATE.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn queued_reads.py"),
    };
    let mut out = BufReader::new(pair.child.stdout.take().unwrap());
    wait_for_line(&mut out, "queued");

    let comm = comm_of(python());
    let agent = Agent::start(&["--comm", &comm, "--exporter", "console"]);
    say(&mut pair);
    wait_for_line(&mut out, "read");
    let capture = agent.stop();
    say(&mut pair);
    wait_timeout(&mut pair.child, Duration::from_secs(10));

    let untimed = capture
        .final_stat("receive_untimed")
        .expect("receive_untimed on the final stats line");
    eprintln!("receive_untimed={untimed}");
    // The kernel may have joined the early packets in the receive queue (TCP coalescing): at
    // least one read found no stamp, and none of the late packets' did.
    assert!(
        (1..=EARLY as u64).contains(&untimed),
        "{untimed} packets read without an arrival stamp; {EARLY} arrived before the agent, \
         {LATE} after"
    );
}
