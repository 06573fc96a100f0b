//! Go's crypto/tls, end to end: a Go HTTPS server and client (the standard library's net/http,
//! HTTP/1.1 and its own HTTP/2 by ALPN) started fresh under the real agent, whose exchanges on
//! both sides must be exactly what each program printed, with its symbol table and stripped,
//! by two Go releases; and a connection older than the agent, read from its next whole
//! exchange with what came before counted.

mod support;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
    time::Duration,
};

use support::{Agent, serial};

/// The Go TLS peer (tests/support/go_tls) with its symbol table; its stripped copy sits beside
/// it with `-stripped` appended.
fn go_tls_peer() -> Option<std::path::PathBuf> {
    match support::go_program("go_tls", ".", &[]) {
        Ok(path) => Some(path),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// Starts `program server`, returns it with its stdout and the port it printed.
fn start_server(
    program: &Path,
    pki: &support::pki::Pki,
) -> (Child, BufReader<ChildStdout>, String) {
    let mut server = Command::new(program)
        .args(["server", &pki.server_cert, &pki.server_key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port = line
        .trim()
        .strip_prefix("port ")
        .unwrap_or_else(|| panic!("the server printed {line:?}"))
        .to_string();
    (server, out, port)
}

/// Each Go release the peer was built with (tests/go-programs.sh): the machine's (with its
/// symbol table, and stripped), and the approved newer one when it could be fetched.
#[test]
fn go_https_is_seen_in_plaintext_on_both_sides() {
    require_privileges!();
    let Some(peer) = go_tls_peer() else {
        return;
    };
    let newer = peer.with_file_name(format!(
        "{}-go1.27",
        peer.file_name().unwrap().to_str().unwrap()
    ));
    https_on_both_sides(&peer);
    // Stripped, found by Go's own function table.
    https_on_both_sides(&stripped_copy(&peer));
    if newer.is_file() {
        https_on_both_sides(&newer);
    } else {
        eprintln!("only one Go release: {} was not built", newer.display());
    }
}

fn https_on_both_sides(peer: &Path) {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::new(dir.path());
    let agent = Agent::start(&["--comm", &comm_of(peer)]);
    let (mut server, mut server_out, port) = start_server(peer, &pki);
    // The server's exec gets the executable hooked (a new file takes about an RCU grace
    // period); the client starts after, and each of its requests is seen from the first.
    agent.wait_for_log(&format!("TLS: hooked {}", peer.display()));
    let layout = match peer.to_string_lossy().ends_with("-stripped") {
        true => "Go's known struct offsets (no DWARF)",
        false => "struct offsets from its DWARF",
    };
    assert!(
        agent.stderr().contains("Go crypto/tls of go1.") && agent.stderr().contains(layout),
        "{}",
        agent.stderr()
    );
    let client = Command::new(peer)
        .args(["client", &pki.ca, &port])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let client_pid = client.id();
    let client = client.wait_with_output().unwrap();
    assert!(client.status.success(), "{client:?}");
    // Closing its stdin stops the server; its lines end there.
    drop(server.stdin.take());
    let answered: Vec<String> = (&mut server_out).lines().map_while(Result::ok).collect();
    assert!(support::wait_timeout(&mut server, Duration::from_secs(10)).success());
    let server_pid = server.id();
    let capture = agent.stop();

    // Each side's own account: the client's "METHOD TARGET STATUS BYTES" in order, the
    // server's "METHOD TARGET STATUS PROTO" per answer.
    support::assert_https_peers(
        &capture,
        (client_pid, &String::from_utf8_lossy(&client.stdout)),
        (server_pid, &answered),
    );
}

/// A Go client's kept-alive HTTPS connection opened before the agent started (the client
/// pauses after its first request; the agent starts and hooks the running programs). Both
/// sides had a `Read` waiting since before the hook: it returns unseen (its buffer is known
/// only at a `Read`'s entry) and is counted, the server's with the second request in it, the
/// client's with its answer. The client's second request, its first `Write` since, comes
/// before any syscall names its socket: counted as a socket not seen. The server's answer to
/// it is an orphan response. Everything after is seen exactly, on both sides: the third
/// request on the old connection, and the new HTTP/2 connection's.
#[test]
fn a_go_connection_older_than_the_agent_is_read_from_the_next_whole_exchange() {
    require_privileges!();
    let Some(peer) = go_tls_peer() else {
        return;
    };
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::new(dir.path());
    let (mut server, mut server_out, port) = start_server(&peer, &pki);
    let mut client = Command::new(&peer)
        .args(["client", &pki.ca, &port])
        .env("GO_TLS_PAUSE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let client_pid = client.id();
    let mut client_out = BufReader::new(client.stdout.take().unwrap());
    let mut before = Vec::new();
    loop {
        let mut line = String::new();
        assert!(client_out.read_line(&mut line).unwrap() > 0, "{before:?}");
        if line.trim() == "paused" {
            break;
        }
        before.push(line);
    }
    assert!(
        before.len() == 1 && before[0].starts_with("GET /one 200 "),
        "{before:?}"
    );
    let agent = Agent::start(&["--comm", &comm_of(&peer)]);
    agent.wait_for_log(&format!("TLS: hooked {}", peer.display()));
    writeln!(client.stdin.take().unwrap(), "go on").unwrap();
    let after: Vec<String> = (&mut client_out).lines().map_while(Result::ok).collect();
    assert!(support::wait_timeout(&mut client, Duration::from_secs(30)).success());
    drop(server.stdin.take());
    let answered: Vec<String> = (&mut server_out).lines().map_while(Result::ok).collect();
    assert!(support::wait_timeout(&mut server, Duration::from_secs(10)).success());
    let server_pid = server.id();
    let capture = agent.stop();

    // The client: everything after its second exchange, in order.
    assert_eq!(after.len(), 4, "{after:?}");
    let printed = support::printed_exchanges("client", &after[1..].join("\n"));
    assert_eq!(
        capture.exchanges_with_bodies(client_pid),
        printed,
        "{}",
        capture.stdout
    );
    // The server: what it answered after the first two.
    assert_eq!(answered.len(), 5, "{answered:?}");
    let expected = support::printed_answers(answered[2..].iter().map(String::as_str));
    assert_eq!(capture.keys_of(server_pid), expected, "{}", capture.stdout);
    for (stat, value) in [
        ("tls_read_unseen", 2),
        ("tls_no_socket", 1),
        ("orphan_responses", 1),
        ("tls_after_close", 0),
        ("not_http", 0),
        ("lost", 0),
        ("h2_connections", 2),
    ] {
        assert_eq!(
            capture.final_stat(stat),
            Some(value),
            "{stat}\n{}",
            capture.stdout
        );
    }
}

/// Stripped (`-ldflags=-s -w`, as container images often are), a Go program has no symbol
/// table, but keeps Go's own function table: the functions are found there, at the very
/// offsets the symbol table gives for the same program unstripped, and `netsonde probes`
/// lists the running program as hooked.
#[test]
fn a_stripped_go_program_is_found_by_its_function_table() {
    let Some(peer) = go_tls_peer() else {
        return;
    };
    let stripped = stripped_copy(&peer);
    use netsonde::probes::go::{GoTlsFinding, find};
    let (Ok(GoTlsFinding::Found(full)), Ok(GoTlsFinding::Found(bare))) =
        (find(&peer), find(&stripped))
    else {
        panic!("{:?} / {:?}", find(&peer), find(&stripped));
    };
    assert_eq!(
        (&bare.version, &bare.write, &bare.read),
        (&full.version, &full.write, &full.read)
    );
    require_privileges!();
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::new(dir.path());
    let agent = Agent::start(&["--comm", &comm_of(&stripped)]);
    let (mut server, _out, _port) = start_server(&stripped, &pki);
    agent.wait_for_log(&format!("TLS: hooked {}", stripped.display()));
    let row = support::tls_probe_row("tls.go", &stripped).unwrap_or_else(|l| panic!("{l}"));
    assert!(
        row.contains("attached")
            && row.contains("Go crypto/tls of go1.")
            && row.contains("Go's known struct offsets (no DWARF)"),
        "{row}"
    );
    let _ = server.kill();
    let _ = server.wait();
    drop(agent.stop());
}

/// The offsets from a `*tls.Conn` to its fd: read from the DWARF of each Go release built
/// here, they are Go's known layout, which a program without DWARF (the stripped copy) gets.
#[test]
fn struct_offsets_come_from_dwarf_and_are_the_known_layout() {
    use netsonde::probes::{
        go::{GoTlsFinding, find},
        go_layout::{KNOWN, LayoutSource},
    };
    let Some(peer) = go_tls_peer() else {
        return;
    };
    let newer = peer.with_file_name(format!(
        "{}-go1.27",
        peer.file_name().unwrap().to_str().unwrap()
    ));
    let mut programs = vec![peer.clone()];
    match newer.is_file() {
        true => programs.push(newer),
        false => eprintln!("only one Go release: {} was not built", newer.display()),
    }
    for program in programs {
        let Ok(GoTlsFinding::Found(go)) = find(&program) else {
            panic!("{}: {:?}", program.display(), find(&program));
        };
        assert_eq!(go.layout.source, LayoutSource::Dwarf, "{}", go.version);
        assert_eq!(go.layout.offsets, KNOWN, "{}", go.version);
    }
    let Ok(GoTlsFinding::Found(bare)) = find(&stripped_copy(&peer)) else {
        panic!("the stripped copy");
    };
    assert_eq!(
        bare.layout.source,
        LayoutSource::Known {
            why: "no DWARF".into()
        }
    );
    assert_eq!(bare.layout.offsets, KNOWN);
}

fn stripped_copy(peer: &Path) -> std::path::PathBuf {
    peer.with_file_name(format!(
        "{}-stripped",
        peer.file_name().unwrap().to_str().unwrap()
    ))
}

/// The name the kernel keeps for a program started from `path` (15 bytes).
fn comm_of(path: &Path) -> String {
    path.file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .chars()
        .take(15)
        .collect()
}
