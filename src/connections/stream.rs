//! Continuity of one direction of a connection. The kernel numbers every syscall's bytes with
//! its position in the stream; a jump forward means bytes went by unseen (a lost record), a jump
//! back means the kernel started counting afresh (its socket cache entry was recreated).

/// What the next segment means for the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// It follows on directly.
    InOrder,
    /// `n` bytes before it were never delivered.
    Gap(u64),
    /// The numbering restarted: how much was missed is unknown.
    Restart,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Stream {
    /// Position the next segment should start at; `None` until the first one sets it.
    next: Option<u64>,
    /// Bytes seen in this direction.
    pub bytes: u64,
}

impl Stream {
    /// A stream seen from position 0.
    pub fn from_start() -> Self {
        Stream {
            next: Some(0),
            bytes: 0,
        }
    }

    /// A stream joined at an unknown position: the first segment sets it.
    pub fn joined() -> Self {
        Stream {
            next: None,
            bytes: 0,
        }
    }

    /// Bytes between what was seen and `final_pos`, the position the kernel says the stream
    /// ended at: records lost at the very end. `None` when this direction's position was never
    /// learnt (a joined connection that saw nothing of it), or when the kernel's end lies
    /// before what was seen: it started counting again (its socket cache entry was made anew)
    /// and the records since were lost, so how much is missing is not known.
    pub fn missing_before(&self, final_pos: u64) -> Option<u64> {
        self.next.and_then(|next| final_pos.checked_sub(next))
    }

    /// Accounts for a segment of `len` bytes at `pos`.
    pub fn advance(&mut self, pos: u64, len: u64) -> Continuity {
        let continuity = match self.next {
            None => Continuity::InOrder,
            Some(next) if pos == next => Continuity::InOrder,
            Some(next) if pos > next => Continuity::Gap(pos - next),
            Some(_) => Continuity::Restart,
        };
        self.next = Some(pos + len);
        self.bytes += len;
        continuity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_gaps_and_restarts() {
        let mut s = Stream::from_start();
        assert_eq!(s.advance(0, 10), Continuity::InOrder);
        assert_eq!(s.advance(10, 5), Continuity::InOrder);
        assert_eq!(s.advance(20, 5), Continuity::Gap(5));
        assert_eq!(s.advance(0, 5), Continuity::Restart);
        assert_eq!(s.advance(5, 1), Continuity::InOrder);
        assert_eq!(s.bytes, 26);
        assert_eq!(s.missing_before(6), Some(0));
        assert_eq!(s.missing_before(9), Some(3));
        // The kernel's end before what was seen: it counted again from 0 since; unknown.
        assert_eq!(s.missing_before(4), None);
        let mut j = Stream::joined();
        assert_eq!(j.missing_before(10), None);
        assert_eq!(j.advance(1000, 1), Continuity::InOrder);
        assert_eq!(j.advance(1001, 1), Continuity::InOrder);
    }
}
