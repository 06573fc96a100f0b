//! How a connection stops being tracked: closed (by close(), the process exiting, or the same
//! fd and socket connecting again), or forgotten while open (idle, evicted, the agent
//! stopping). A close finishes what ends at close and, when the kernel's final stream positions
//! show every byte was seen, reports requests that got no answer; forgetting only counts.

use super::*;

/// Where a closed socket's streams ended, by direction (egress, ingress), as the kernel counted.
#[derive(Debug, Clone, Copy)]
pub(super) struct FinalPositions {
    wire: [u64; 2],
    plaintext: [u64; 2],
}

impl Tracker {
    /// Forgets connections idle since before `now_ns - idle_timeout` (kernel clock); what they
    /// still held goes to `out` (see [`Parser::abandon`]).
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<ObservedExchange>) {
        let cutoff = now_ns.saturating_sub(self.config.idle_timeout_ns);
        // A handshake whose connect() announcement never came.
        self.handshakes.retain(|_, (_, at)| *at >= cutoff);
        for (key, mut conn) in self.table.pop_idle(|c| c.last_seen_ns < cutoff) {
            self.stats.expired.fetch_add(1, Relaxed);
            // Not closed, only quiet: what it was waiting for is counted, not reported.
            self.forget(key, &mut conn, out);
        }
        self.stats.active.store(self.table.len() as u64, Relaxed);
        out.append(&mut self.forgotten);
    }

    /// At shutdown: what is still open is dropped (counted, not reported).
    pub fn finish(&mut self, out: &mut Vec<ObservedExchange>) {
        for (key, mut conn) in self.table.drain() {
            self.forget(key, &mut conn, out);
        }
        self.stats.active.store(0, Relaxed);
        out.append(&mut self.forgotten);
    }

    /// Stops tracking an open connection (idle, evicted, shutdown).
    pub(super) fn forget(
        &mut self,
        key: ConnKey,
        conn: &mut Connection,
        out: &mut Vec<ObservedExchange>,
    ) {
        self.untracked(key, conn, false);
        conn.http.abandon(&mut self.scratch);
        Self::publish(&self.stats, key, conn, &mut self.scratch, out);
    }

    pub(super) fn on_close(&mut self, close: &ConnCloseEvent, out: &mut Vec<ObservedExchange>) {
        let key = ConnKey {
            tgid: close.tgid,
            fd: close.fd,
            sock: close.sock,
        };
        self.retransmits_at_close(key, close.total_retransmits);
        self.close(
            key,
            close.ts_ns,
            Some(FinalPositions {
                wire: [close.egress_bytes, close.ingress_bytes],
                plaintext: [close.tls_egress_bytes, close.tls_ingress_bytes],
            }),
            out,
        );
    }

    pub(super) fn on_process_exit(
        &mut self,
        exit: &ProcessExitEvent,
        out: &mut Vec<ObservedExchange>,
    ) {
        for key in self.table.keys_of(exit.tgid) {
            self.close(key, exit.ts_ns, None, out);
        }
        self.resolver.forget(exit.tgid);
    }

    /// The socket's own count of retransmitted segments at its close (`total`) against the
    /// notes the connection got since it was connected or accepted: what no note reported is
    /// counted on the connection now. Not for connections older than netsonde (their count
    /// began unseen), nor when the kernel's count was not read.
    fn retransmits_at_close(&mut self, key: ConnKey, total: u32) {
        let Some(conn) = self.table.get_mut(&key) else {
            return;
        };
        let Some(noted) = conn.retransmits_noted else {
            return;
        };
        if total == netsonde_common::UNKNOWN_RETRANSMITS || u64::from(total) <= noted {
            return;
        }
        let missed = u64::from(total) - noted;
        conn.retransmits_noted = Some(u64::from(total));
        self.stats.retransmits_at_close.fetch_add(missed, Relaxed);
        let activity = conn.activity(key, ActivityKind::Retransmits { count: missed });
        self.activity.push(activity);
    }

    /// The connection closed at `at_ns` (kernel clock), its streams ending at `ends` when the
    /// kernel said where (a close() it saw; not a process exit).
    pub(super) fn close(
        &mut self,
        key: ConnKey,
        at_ns: u64,
        ends: Option<FinalPositions>,
        out: &mut Vec<ObservedExchange>,
    ) {
        let Some(mut conn) = self.table.remove(&key) else {
            return;
        };
        self.stats.closed.fetch_add(1, Relaxed);
        self.untracked(key, &mut conn, true);
        let at_ns = at_ns.max(conn.last_seen_ns);
        // Only a conversation seen whole, to its last byte, can show a request that got no
        // answer: after any loss, which bytes were answers is a guess (a ring buffer losing
        // most records made a response lost with them pass for none).
        let seen_to_the_end = ends.is_some_and(|ends| {
            Self::catch_up(&self.stats, &mut conn, ends, at_ns, &mut self.scratch)
        }) && !conn.lost_bytes;
        conn.http.close(at_ns, seen_to_the_end, &mut self.scratch);
        Self::publish(&self.stats, key, &mut conn, &mut self.scratch, out);
    }

    /// Feeds the parser what records lost at the very end of the streams hid, as gaps; whether
    /// both directions' ends were known and nothing was missing before them.
    fn catch_up(
        stats: &ConnectionStats,
        conn: &mut Connection,
        ends: FinalPositions,
        at_ns: u64,
        exchanges: &mut Vec<Exchange>,
    ) -> bool {
        let (streams, finals) = match conn.tls {
            Tls::No => (&mut conn.streams, ends.wire),
            Tls::Plaintext => (&mut conn.plaintext, ends.plaintext),
            // Ciphertext nobody decrypted: nothing is parsed.
            Tls::Wire => return false,
        };
        let mut known = true;
        for dir in [Direction::Egress, Direction::Ingress] {
            let stream = &mut streams[dir.index()];
            match stream.missing_before(finals[dir.index()]) {
                Some(0) => {}
                Some(n) => {
                    stats.gap_bytes.fetch_add(n, Relaxed);
                    stream.advance(finals[dir.index()], 0);
                    conn.http.feed(dir, &Segment::gap(n, at_ns), exchanges);
                    known = false;
                }
                None => known = false,
            }
        }
        known
    }
}
