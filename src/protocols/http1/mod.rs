//! HTTP/1.0 and 1.1: pairs the requests of one direction with the responses of the other.
//!
//! Covers keep-alive, pipelining (responses answer requests in order), Content-Length and
//! chunked bodies, 1xx interim responses, bodiless responses (HEAD, 204, 304), responses that end
//! at close, and connections that switch protocol (101, CONNECT). Which direction carries the
//! requests is learnt from the traffic: the side that sends a request is the HTTP client.
//!
//! Never invents: a response without a request it could answer is counted and dropped, and so
//! is a request whose response never comes. When a gap hides a message start, exactly one
//! message is assumed hidden: a hidden request leaves a *hole* in the queue, so its response is
//! dropped instead of being paired with the next request; a hidden response consumes the
//! request it answered. Only a single gap hiding several pipelined message starts can pair
//! wrongly, and every gap is counted.

mod head;
mod side;
mod start;

use std::collections::VecDeque;

use head::{BodyInfo, Head};
use side::{End, Framing, Side, Sink};

use super::{Completeness, Direction, Exchange, Request, Response, Role, Segment};

/// Limits that bound a connection's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest head (start line and headers) accepted.
    pub max_head_bytes: usize,
    /// Most requests waiting for responses (pipelining depth); older ones are dropped.
    pub max_pending: usize,
    /// Segments a connection joined mid-stream may show without a message start before it is
    /// declared not HTTP/1.
    pub max_resync_segments: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            max_pending: 128,
            max_resync_segments: 64,
        }
    }
}

/// What a connection's parser noticed besides exchanges (added to self-telemetry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notes {
    /// Responses with no request to answer (the request was not seen).
    pub orphan_responses: u64,
    /// Requests whose response never came (connection ended, or too many pending).
    pub unanswered_requests: u64,
    /// Message starts hidden by gaps, and bodies whose framing a gap hid.
    pub hidden_messages: u64,
    pub unframed_bodies: u64,
    /// Heads or chunk lines that were not valid HTTP/1.
    pub malformed: u64,
    /// Heads longer than the captured prefix of their syscall (also in `hidden_messages`).
    pub heads_cut: u64,
    /// Requests the connection ended (closed, or forgotten: idle, evicted, agent exit) before
    /// they were whole: a head begun and never finished (slowloris), or a body still owed.
    pub incomplete_requests: u64,
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Parsing HTTP/1.
    Active,
    /// The first bytes were not HTTP/1.
    NotHttp,
    /// Switched to another protocol (101 Switching Protocols, or a CONNECT tunnel).
    Switched,
}

/// The HTTP/1 state of one connection.
#[derive(Debug, Clone)]
pub struct Http1 {
    sides: [Side; 2],
    pairing: Pairing,
    midstream_segments: Option<u32>,
    limits: Limits,
}

impl Http1 {
    /// For a connection seen from its start.
    pub fn new(limits: Limits) -> Self {
        Http1 {
            sides: [
                Side::fresh(Direction::Egress, limits.max_head_bytes),
                Side::fresh(Direction::Ingress, limits.max_head_bytes),
            ],
            pairing: Pairing::new(limits.max_pending),
            midstream_segments: None,
            limits,
        }
    }

    /// For a connection joined in the middle: both directions wait for a message start.
    pub fn midstream(limits: Limits) -> Self {
        Http1 {
            sides: [
                Side::midstream(Direction::Egress, limits.max_head_bytes),
                Side::midstream(Direction::Ingress, limits.max_head_bytes),
            ],
            midstream_segments: Some(0),
            ..Http1::new(limits)
        }
    }

    /// Feeds one segment of one direction; complete exchanges go to `out`.
    pub fn feed(&mut self, dir: Direction, seg: &Segment<'_>, out: &mut Vec<Exchange>) {
        if self.status() != Status::Active {
            return;
        }
        let switched_at = self.sides[dir.index()].feed(seg, &mut self.pairing);
        if let (Some(at), Some(upgrade)) = (switched_at, &mut self.pairing.upgrade) {
            upgrade.resume_at = at;
        }
        if let Some(n) = &mut self.midstream_segments {
            if self.pairing.found_message {
                self.midstream_segments = None;
            } else {
                *n += 1;
                if *n >= self.limits.max_resync_segments {
                    self.pairing.status = Status::NotHttp;
                }
            }
        }
        self.settle(out);
    }

    /// Bytes of `dir` went missing in a way that breaks the position (the stream restarted).
    pub fn desync(&mut self, dir: Direction, out: &mut Vec<Exchange>) {
        if self.pairing.request_dir != Some(dir) {
            self.pairing.answer_gaps += 1;
        }
        self.sides[dir.index()].resync(&mut self.pairing);
        self.settle(out);
    }

    /// The connection closed at `at_ns`: finish what close finishes; a request still waiting
    /// for its response is counted as unanswered and, when the caller knows no byte went
    /// unseen at the end (`seen_to_the_end`: a response lost with its records must not pass
    /// for none), reported as a failed exchange ([`Completeness::NoResponse`]) ending at the
    /// close. A request not yet whole is counted incomplete.
    pub fn close(&mut self, at_ns: u64, seen_to_the_end: bool, out: &mut Vec<Exchange>) {
        if self.status() == Status::Active {
            self.count_incomplete();
        }
        // Responses skipped while the answering side looked for its place may have answered
        // what waits: then nothing is known about them.
        let answers_in_place = self
            .pairing
            .request_dir
            .is_some_and(|d| self.sides[d.opposite().index()].in_place());
        // A gap in the answers while requests waited may have hidden several responses and
        // consumed one request only; responses then pair with older requests, and the ones
        // left at the end are not the unanswered ones. Only a queue that saw no such gap since
        // its oldest request says which got no answer.
        let no_gap_while_waiting = self
            .pairing
            .pending
            .front()
            .is_none_or(|oldest| oldest.answer_gaps == self.pairing.answer_gaps);
        let seen_to_the_end = seen_to_the_end && answers_in_place && no_gap_while_waiting;
        for side in &mut self.sides {
            side.close(&mut self.pairing);
        }
        for pending in std::mem::take(&mut self.pairing.pending) {
            let Some(request) = pending.request else {
                continue;
            };
            self.pairing.notes.unanswered_requests += 1;
            if !seen_to_the_end {
                continue;
            }
            let end_ns = at_ns.max(pending.end_ns);
            self.pairing.out.push(Exchange {
                request,
                response: Response::default(),
                request_start_ns: pending.start_ns,
                request_end_ns: pending.end_ns,
                response_start_ns: end_ns,
                response_end_ns: end_ns,
                request_head_bytes: pending.head_bytes,
                request_body_bytes: pending.body_bytes,
                response_head_bytes: 0,
                response_body_bytes: 0,
                request_messages: None,
                response_messages: None,
                informational: pending.informational,
                completeness: Completeness::NoResponse,
            });
        }
        self.settle(out);
    }

    /// The connection is forgotten while open (idle too long, evicted, or the agent stops):
    /// what waited is counted, not reported (it may still be answered, unseen). An exchange
    /// whose request body was still arriving is reported with the body seen so far.
    pub fn abandon(&mut self, out: &mut Vec<Exchange>) {
        if self.status() == Status::Active {
            self.count_incomplete();
        }
        if let Some(dir) = self.pairing.request_dir {
            let seen = self.sides[dir.index()].body_so_far();
            self.pairing
                .release_held(Some(seen), Completeness::RequestCut);
        }
        self.pairing.notes.unanswered_requests += self
            .pairing
            .pending
            .drain(..)
            .filter(|p| p.request.is_some())
            .count() as u64;
        for side in &mut self.sides {
            side.kill();
        }
        self.settle(out);
    }

    /// A request side stopped inside a request: one incomplete request.
    fn count_incomplete(&mut self) {
        if let Some(dir) = self.pairing.request_dir
            && self.sides[dir.index()].mid_message()
        {
            self.pairing.notes.incomplete_requests += 1;
        } else if self.pairing.request_dir.is_none() && self.sides.iter().any(Side::mid_message) {
            // A first head never finished: which side requests is not known yet, but only a
            // client opens a conversation.
            self.pairing.notes.incomplete_requests += 1;
        }
    }

    pub fn status(&self) -> Status {
        self.pairing.status
    }

    /// The traced process's HTTP role, once a message showed which side requests.
    pub fn role(&self) -> Option<Role> {
        self.pairing.request_dir.map(|d| match d {
            Direction::Egress => Role::Client,
            Direction::Ingress => Role::Server,
        })
    }

    /// Whether any HTTP/1 message was found (a joined connection that finds none may be
    /// something else, such as HTTP/2).
    pub fn found_message(&self) -> bool {
        self.pairing.found_message
    }

    /// The request an `Upgrade: h2c` switched to HTTP/2, once (with where the HTTP/2 bytes
    /// begin in the segment just fed).
    pub fn take_h2c_upgrade(&mut self) -> Option<H2cUpgrade> {
        self.pairing.upgrade.take()
    }

    /// Takes the notes gathered since the last call.
    pub fn take_notes(&mut self) -> Notes {
        std::mem::take(&mut self.pairing.notes)
    }

    fn settle(&mut self, out: &mut Vec<Exchange>) {
        out.append(&mut self.pairing.out);
        if self.pairing.status != Status::Active {
            for side in &mut self.sides {
                side.kill();
            }
        }
    }
}

/// A request waiting for its response.
#[derive(Debug, Clone)]
struct Pending {
    id: u64,
    /// `None`: a hole, a request hidden by a gap.
    request: Option<Request>,
    start_ns: u64,
    end_ns: u64,
    head_bytes: u64,
    body_bytes: u64,
    informational: u8,
    /// [`Pairing::answer_gaps`] when it was sent: a gap in the answers since then may have hidden
    /// its response (one gap can hide several), so it cannot be said to have had none.
    answer_gaps: u64,
}

/// The response being received.
#[derive(Debug, Clone)]
enum Responding {
    /// Answers the front pending request.
    Final {
        response: Response,
        start_ns: u64,
        head_bytes: u64,
    },
    /// A 1xx interim response.
    Interim,
    /// No request to answer; its body is skipped.
    Orphan,
}

#[derive(Debug, Clone)]
struct Pairing {
    request_dir: Option<Direction>,
    pending: VecDeque<Pending>,
    /// Id of the request whose body is still arriving.
    receiving: Option<u64>,
    /// An exchange whose response ended before its request's body did (a server answering
    /// early, such as 413 to a large upload): reported when the body ends, so the body's size
    /// and packets are charged to it and not to the next request.
    held: Option<Exchange>,
    responding: Option<Responding>,
    next_id: u64,
    max_pending: usize,
    found_message: bool,
    status: Status,
    notes: Notes,
    out: Vec<Exchange>,
    /// The request an h2c upgrade hands to HTTP/2 (its `resume_at` is set by the feed).
    upgrade: Option<H2cUpgrade>,
    /// Gaps in the responses' direction so far (hidden messages, lost framing, restarts).
    answer_gaps: u64,
}

impl Pairing {
    fn new(max_pending: usize) -> Self {
        Pairing {
            request_dir: None,
            pending: VecDeque::new(),
            receiving: None,
            held: None,
            responding: None,
            next_id: 0,
            max_pending,
            found_message: false,
            status: Status::Active,
            notes: Notes::default(),
            out: Vec::new(),
            upgrade: None,
            answer_gaps: 0,
        }
    }

    fn on_request(
        &mut self,
        dir: Direction,
        request: Request,
        body: BodyInfo,
        head_bytes: u64,
        first_ns: u64,
    ) -> Framing {
        if *self.request_dir.get_or_insert(dir) != dir {
            // A request travelling the way responses do: not a protocol netsonde understands.
            self.notes.malformed += 1;
            return Framing::announced(body, false);
        }
        if self.pending.len() >= self.max_pending
            && self
                .pending
                .pop_front()
                .is_some_and(|p| p.request.is_some())
        {
            self.notes.unanswered_requests += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.receiving = Some(id);
        self.pending.push_back(Pending {
            id,
            request: Some(request),
            start_ns: first_ns,
            end_ns: first_ns,
            head_bytes,
            body_bytes: 0,
            informational: 0,
            answer_gaps: self.answer_gaps,
        });
        Framing::announced(body, false)
    }

    fn on_response(
        &mut self,
        dir: Direction,
        response: Response,
        body: BodyInfo,
        head_bytes: u64,
        first_ns: u64,
    ) -> Framing {
        if *self.request_dir.get_or_insert(dir.opposite()) != dir.opposite() {
            self.notes.malformed += 1;
            return Framing::announced(body, true);
        }
        let status = response.status;
        let interim = (100..200).contains(&status) && status != 101;
        let Some(front) = self.pending.front_mut() else {
            self.notes.orphan_responses += 1;
            self.responding = Some(Responding::Orphan);
            return if interim {
                Framing::None
            } else {
                Framing::announced(body, true)
            };
        };
        let Some(request) = &front.request else {
            // The answer to a hidden request: skip it, and the hole with it.
            if !interim {
                self.pending.pop_front();
            }
            self.notes.orphan_responses += 1;
            self.responding = Some(Responding::Orphan);
            return if interim {
                Framing::None
            } else {
                Framing::announced(body, true)
            };
        };
        if interim {
            front.informational = front.informational.saturating_add(1);
            self.responding = Some(Responding::Interim);
            return Framing::None;
        }
        // RFC 9112 §6.3: HEAD responses, 1xx, 204 and 304 have no body whatever they announce;
        // a 2xx answer to CONNECT starts a tunnel.
        let bodiless = request.method == "HEAD" || status == 204 || status == 304 || status == 101;
        let tunnel = request.method == "CONNECT" && (200..300).contains(&status);
        self.responding = Some(Responding::Final {
            response,
            start_ns: first_ns,
            head_bytes,
        });
        if bodiless || tunnel {
            Framing::None
        } else {
            Framing::announced(body, true)
        }
    }

    fn on_response_done(&mut self, body_bytes: u64, last_ns: u64, end: End) {
        let Some(Responding::Final {
            response,
            start_ns,
            head_bytes,
        }) = self.responding.take()
        else {
            return;
        };
        let Some(pending) = self.pending.pop_front() else {
            return;
        };
        let body_owed = self.receiving == Some(pending.id);
        let Some(request) = pending.request else {
            if body_owed {
                self.receiving = None;
            }
            return;
        };
        let switched = response.status == 101
            || (request.method == "CONNECT" && (200..300).contains(&response.status));
        let request_meta = (
            pending.start_ns,
            pending.end_ns,
            pending.head_bytes,
            pending.body_bytes,
        );
        let (request_start_ns, request_end_ns, request_head_bytes, request_body_bytes) =
            request_meta;
        let h2c = response.status == 101
            && response
                .headers
                .iter()
                .any(|(n, v)| n == "upgrade" && v.trim().eq_ignore_ascii_case("h2c"));
        if h2c && let Some(request_dir) = self.request_dir {
            // Not an exchange of its own: HTTP/2 answers this request on stream 1.
            self.upgrade = Some(H2cUpgrade {
                request,
                request_dir,
                start_ns: request_start_ns,
                end_ns: request_end_ns,
                body_bytes: request_body_bytes,
                resume_at: 0,
            });
            self.status = Status::Switched;
            return;
        }
        let exchange = Exchange {
            request,
            response,
            request_start_ns,
            request_end_ns,
            response_start_ns: start_ns,
            response_end_ns: last_ns,
            request_head_bytes,
            request_body_bytes,
            response_head_bytes: head_bytes,
            response_body_bytes: body_bytes,
            request_messages: None,
            response_messages: None,
            informational: pending.informational,
            completeness: match end {
                End::Framed | End::Closed => Completeness::Complete,
                End::Cut => Completeness::BodyCut,
                End::Lost => Completeness::FramingLost,
            },
        };
        if switched {
            self.status = Status::Switched;
        }
        if body_owed && !switched {
            self.held = Some(exchange);
        } else {
            if body_owed {
                self.receiving = None;
            }
            self.out.push(exchange);
        }
    }

    /// Reports the held exchange with the request body it got, `seen` (bytes, last byte's
    /// time) when known, and `completeness` if the body did not end by its framing.
    fn release_held(&mut self, seen: Option<(u64, u64)>, completeness: Completeness) {
        if let Some(mut exchange) = self.held.take() {
            if let Some((body_bytes, last_ns)) = seen {
                exchange.request_body_bytes = body_bytes;
                exchange.request_end_ns = last_ns.max(exchange.request_start_ns);
            }
            if exchange.completeness == Completeness::Complete {
                exchange.completeness = completeness;
            }
            self.receiving = None;
            self.out.push(exchange);
        }
    }
}

impl Sink for Pairing {
    fn head(
        &mut self,
        dir: Direction,
        head: Head,
        body: BodyInfo,
        head_bytes: u64,
        first_ns: u64,
    ) -> Framing {
        self.found_message = true;
        match head {
            Head::Request(r) => self.on_request(dir, r, body, head_bytes, first_ns),
            Head::Response(r) => self.on_response(dir, r, body, head_bytes, first_ns),
        }
    }

    fn done(&mut self, dir: Direction, body_bytes: u64, last_ns: u64, end: End) {
        if Some(dir) == self.request_dir {
            if self.held.is_some() {
                let completeness = match end {
                    End::Framed | End::Closed => Completeness::Complete,
                    End::Cut => Completeness::RequestCut,
                    End::Lost => Completeness::BytesLost,
                };
                self.release_held(Some((body_bytes, last_ns)), completeness);
            } else if let Some(id) = self.receiving.take()
                && let Some(p) = self.pending.iter_mut().find(|p| p.id == id)
            {
                p.body_bytes = body_bytes;
                p.end_ns = last_ns;
            }
        } else {
            self.on_response_done(body_bytes, last_ns, end);
        }
    }

    fn malformed(&mut self, _dir: Direction, fatal: bool) {
        if fatal {
            self.status = Status::NotHttp;
        } else {
            self.notes.malformed += 1;
        }
    }

    fn head_cut(&mut self, _dir: Direction) {
        self.notes.heads_cut += 1;
    }

    fn hidden_message(&mut self, dir: Direction) {
        self.notes.hidden_messages += 1;
        if Some(dir) != self.request_dir {
            self.answer_gaps += 1;
        }
        if Some(dir) == self.request_dir {
            // One request went unseen: hold its place so its response is not paired with the
            // next visible request. An exchange waiting for its request body's end will not
            // see it: reported with what was seen.
            self.release_held(None, Completeness::BytesLost);
            self.receiving = None;
            let id = self.next_id;
            self.next_id += 1;
            self.pending.push_back(Pending {
                id,
                request: None,
                start_ns: 0,
                end_ns: 0,
                head_bytes: 0,
                body_bytes: 0,
                informational: 0,
                answer_gaps: self.answer_gaps,
            });
        } else if self.request_dir.is_some() {
            // One response went unseen: it answered the oldest waiting request.
            self.responding = None;
            if self
                .pending
                .pop_front()
                .is_some_and(|p| p.request.is_some())
            {
                self.notes.unanswered_requests += 1;
            }
        }
    }

    fn unframed(&mut self, dir: Direction) {
        self.notes.unframed_bodies += 1;
        if Some(dir) != self.request_dir {
            self.answer_gaps += 1;
        }
    }

    fn switched(&self) -> bool {
        self.status == Status::Switched
    }
}

/// An HTTP/1.1 request a `101 Switching Protocols` upgraded to HTTP/2 (`Upgrade: h2c`,
/// RFC 7540 §3.2): it becomes stream 1 of the HTTP/2 connection, and is answered there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2cUpgrade {
    pub request: Request,
    /// The direction requests travel in.
    pub request_dir: Direction,
    pub start_ns: u64,
    pub end_ns: u64,
    pub body_bytes: u64,
    /// Where, in the segment that carried the 101, the HTTP/2 bytes begin.
    pub resume_at: u64,
}

#[cfg(test)]
mod tests;
