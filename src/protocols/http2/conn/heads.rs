//! Header blocks of an HTTP/2 connection: a request's head opens a stream, a response's head
//! and trailers follow it, and a stream whose response ended becomes an exchange.

use super::{Block, Http2, REFUSED_REMEMBERED};
use crate::protocols::{
    Completeness, Direction, Exchange,
    http2::{
        frame::kind,
        hpack::HpackError,
        stream::{Stream, exchange, header},
    },
};

impl Http2 {
    pub(super) fn on_block(
        &mut self,
        dir: Direction,
        kind_: u8,
        block: Block,
        out: &mut Vec<Exchange>,
    ) {
        let mut headers = Vec::new();
        if let Err(e) = self.sides[dir.index()]
            .decoder
            .decode(&block.bytes, &mut headers)
        {
            tracing::debug!("an HTTP/2 header block did not decode: {e}");
            // Only this block is lost when it was merely too large; else the table too.
            if !matches!(e, HpackError::TooLarge(_)) {
                self.lose_table(dir);
            }
            if kind_ != kind::PUSH_PROMISE {
                self.head_lost(dir, block.stream);
            }
            return;
        }
        self.notes.unknown_fields += self.sides[dir.index()].decoder.take_unknown();
        if kind_ == kind::PUSH_PROMISE {
            // Server push: the promised request is not one the client made; not followed.
            return;
        }
        if self.client_dir.is_none() {
            // A joined connection whose TCP role was not known: the first request or response
            // head says which way requests go.
            if header(&headers, ":method").is_some() {
                self.client_dir = Some(dir);
            } else if header(&headers, ":status").is_some() {
                self.client_dir = Some(dir.opposite());
            }
        }
        let requests = Some(dir) == self.client_dir;
        if requests && !self.streams.contains_key(&block.stream) {
            if self.streams.len() >= self.limits.max_streams
                && !self.evict_lost_stream()
                && !self.report_oldest_held(out)
            {
                self.notes.streams_refused += 1;
                if self.refused.len() >= REFUSED_REMEMBERED {
                    self.refused.pop_front();
                }
                self.refused.push_back(block.stream);
                return;
            }
            self.streams.insert(block.stream, Stream::default());
        }
        let Some(stream) = self.streams.get_mut(&block.stream) else {
            // A response for a stream whose request was not followed: refused, or its start
            // went missing (or came before netsonde joined).
            if let Some(i) = self.refused.iter().position(|&id| id == block.stream) {
                self.refused.remove(i);
            } else {
                self.notes.lost_streams += 1;
            }
            return;
        };
        let gap = stream.gap();
        let half = if requests {
            &mut stream.request
        } else {
            &mut stream.response
        };
        if half.head.is_none() && gap && !headers.iter().any(|(n, _)| n.starts_with(':')) {
            // No pseudo-header after bytes went missing: trailers, whose head was lost.
            half.head_lost = true;
        }
        let interim = !requests
            && headers
                .iter()
                .any(|(n, v)| n == ":status" && v.starts_with('1') && v.len() == 3);
        if interim {
            stream.informational = stream.informational.saturating_add(1);
            return;
        }
        if half.head.is_none() && !half.head_lost {
            // Its first frame (DATA cannot come before it): bytes its direction lost earlier
            // were not this half's, unless an interim head was among them.
            if half.body == 0 {
                half.gap = false;
            }
            half.head = Some(headers);
            half.start_ns = block.at_ns;
        } else {
            half.trailers = headers;
        }
        half.end_ns = half.end_ns.max(block.at_ns);
        if block.end_stream {
            half.ended = true;
            self.settle(block.stream, out);
        }
    }

    /// A stream whose response ended becomes an exchange once its request ended too, unless
    /// its start went missing. A server may answer before the request is all there (an early
    /// error, a refused upload): the stream is held, and the rest of the request, its bytes
    /// and its messages, still belong to it, until the request ends or a reset ends the
    /// stream (RFC 9113 §8.1).
    pub(super) fn settle(&mut self, id: u32, out: &mut Vec<Exchange>) {
        if !self.streams.get(&id).is_some_and(Stream::done) {
            return;
        }
        self.report_answered_whole(id, Completeness::Complete, out);
    }

    /// Reports stream `id`, whose response ended: `Complete` when its request ended too (or a
    /// reset ended the stream), `RequestCut` when it is reported without its request's end.
    /// Counted as lost instead when a head went missing.
    pub(super) fn report_answered_whole(
        &mut self,
        id: u32,
        completeness: Completeness,
        out: &mut Vec<Exchange>,
    ) {
        let stream = self.streams.remove(&id).expect("checked");
        if stream.reportable() {
            out.push(exchange(stream, completeness));
        } else {
            self.notes.lost_streams += 1;
        }
    }

    /// Makes room for a new stream by dropping the oldest one that lost bytes (its end may
    /// have gone by unseen), counted as lost. Returns whether there was one.
    fn evict_lost_stream(&mut self) -> bool {
        let oldest = self
            .streams
            .iter()
            .filter(|(_, s)| s.gap() || s.request.head_lost || s.response.head_lost)
            .map(|(&id, _)| id)
            .min();
        match oldest {
            Some(id) => {
                self.streams.remove(&id);
                self.notes.lost_streams += 1;
                true
            }
            None => false,
        }
    }

    /// Makes room for a new stream by reporting the oldest one held for the end of its request
    /// (a client that never ends nor resets it would otherwise keep its room), its request cut.
    /// Returns whether there was one.
    fn report_oldest_held(&mut self, out: &mut Vec<Exchange>) -> bool {
        let oldest = self
            .streams
            .iter()
            .filter(|(_, s)| s.response.ended)
            .map(|(&id, _)| id)
            .min();
        oldest
            .inspect(|&id| self.report_answered_whole(id, Completeness::RequestCut, out))
            .is_some()
    }
}
