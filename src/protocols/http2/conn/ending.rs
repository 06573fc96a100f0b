//! How an HTTP/2 connection ends: closed (what it said is reported, what got no answer too when
//! the answers were seen whole) or forgotten while open (what waited is counted).

use super::{Http2, Status};
use crate::protocols::{
    Completeness, Exchange,
    http2::stream::{exchange, header, unanswered},
};

impl Http2 {
    /// The connection is forgotten while open (idle, evicted, agent exit): streams answered
    /// whole and held for the end of their request are reported, their request cut; requests
    /// still waiting are counted as unanswered (they may still be answered, unseen).
    pub fn abandon(&mut self, out: &mut Vec<Exchange>) {
        if self.status == Status::Active {
            let mut held: Vec<u32> = self
                .streams
                .iter()
                .filter(|(_, s)| s.response.ended)
                .map(|(&id, _)| id)
                .collect();
            held.sort_unstable();
            for id in held {
                self.report_answered_whole(id, Completeness::RequestCut, out);
            }
        }
        self.unanswered();
    }

    pub(super) fn unanswered(&mut self) {
        self.notes.unanswered_requests += self
            .streams
            .values()
            .filter(|s| s.request.head.is_some())
            .count() as u64;
        self.streams.clear();
    }

    /// The connection closed at `at_ns`. A response whose head came is reported: its request
    /// cut when the response ended (held for the end of the request); complete when its body
    /// reached its `content-length` (a client may close without reading the empty DATA frame
    /// that ends the stream); else cut. A stream whose head went missing is counted
    /// as lost. A request with no response head went unanswered: it is counted, and reported as
    /// a failed exchange ([`Completeness::NoResponse`]) ending at the close when nothing of the
    /// answers can have gone unseen — `seen_to_the_end` (the caller knows no byte of the
    /// connection went missing) and the answering direction never out of place, not inside a
    /// frame at the close.
    pub fn close(&mut self, at_ns: u64, seen_to_the_end: bool, out: &mut Vec<Exchange>) {
        if self.status == Status::Active {
            self.report_answered(out);
            if seen_to_the_end && self.answers_seen_whole() {
                self.report_unanswered(at_ns, out);
            }
        }
        self.unanswered();
    }

    fn report_answered(&mut self, out: &mut Vec<Exchange>) {
        let mut ids: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| s.response.head.is_some() || s.response.head_lost)
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            let stream = self.streams.remove(&id).expect("listed");
            if !stream.reportable() {
                self.notes.lost_streams += 1;
                continue;
            }
            let length = stream
                .response
                .head
                .as_deref()
                .and_then(|h| header(h, "content-length"))
                .and_then(|v| v.trim().parse::<u64>().ok());
            let completeness = match length {
                // Held for the end of its request, which the close cut.
                _ if stream.response.ended => Completeness::RequestCut,
                Some(n) if stream.response.body >= n => Completeness::Complete,
                _ => Completeness::BodyCut,
            };
            out.push(exchange(stream, completeness));
        }
    }

    /// Whether every byte the server sent was decoded and it stopped between two frames: then
    /// a stream without a response head got none.
    fn answers_seen_whole(&self) -> bool {
        let Some(client) = self.client_dir else {
            return false;
        };
        let answers = &self.sides[client.opposite().index()];
        answers.gapless
            && answers.aligned
            && answers.buf.is_empty()
            && answers.block.is_none()
            && !answers.await_pad
    }

    fn report_unanswered(&mut self, at_ns: u64, out: &mut Vec<Exchange>) {
        let mut ids: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| {
                s.request.head.is_some()
                    && !s.request.head_lost
                    && s.response.head.is_none()
                    && !s.response.head_lost
                    && !s.gap()
            })
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            let stream = self.streams.remove(&id).expect("listed");
            self.notes.unanswered_requests += 1;
            out.push(unanswered(stream, at_ns));
        }
    }
}
