//! Decodes raw ring-buffer records into typed events. Pure: no I/O, no state.

mod batch;
pub mod clock;

use netsonde_common::{
    ConnCloseEvent, ConnOpenEvent, DataEvent, KernelNoteEvent, ProcessEvent, ProcessExitEvent, kind,
};

pub use batch::Batch;
pub use clock::KernelClock;

/// One record from the kernel. A data record's header and payload are borrowed from the bytes
/// it was decoded from (a [`Batch`]'s), so decoding copies and allocates nothing. (Its header
/// was copied out, 160 bytes, and the event moved whole from the batch to the tracker: 6 % of
/// the agent's samples under load, benchmarks/RESULTS.md.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A read- or write-like syscall on a TCP socket, with the captured payload prefix.
    Data {
        header: &'a DataEvent,
        payload: &'a [u8],
    },
    /// A connection became known.
    Open(ConnOpenEvent),
    /// A connection was closed.
    Close(ConnCloseEvent),
    /// A traced process exited.
    ProcessExit(ProcessExitEvent),
    /// A child of a monitored process joined the monitored set (to confirm or remove).
    ProcessFork(ProcessEvent),
    /// A traced process started a new program.
    ProcessExec(ProcessEvent),
    /// The kernel retransmitted or dropped a traced connection's packet, or finished or failed
    /// its handshake.
    KernelNote(KernelNoteEvent),
}

/// Whether the process-lifecycle stage wants records of `kind` (by number: a batch counts them
/// before any is decoded). The same kinds as [`Event::lifecycle`].
pub fn is_lifecycle_kind(kind: u32) -> bool {
    matches!(
        kind,
        kind::PROCESS_EXIT | kind::PROCESS_FORK | kind::PROCESS_EXEC
    )
}

impl Event<'_> {
    /// The event, if the process-lifecycle stage wants it (those carry no payload, so they
    /// outlive the bytes they were decoded from). The same kinds as [`is_lifecycle_kind`].
    pub fn lifecycle(&self) -> Option<Event<'static>> {
        match *self {
            Event::ProcessExit(e) => Some(Event::ProcessExit(e)),
            Event::ProcessFork(e) => Some(Event::ProcessFork(e)),
            Event::ProcessExec(e) => Some(Event::ProcessExec(e)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is too short for a header")]
    Short { len: usize },
    #[error("record kind {kind} is unknown (user space and eBPF object out of step?)")]
    UnknownKind { kind: u32 },
    #[error("record of kind {kind} has {len} bytes, expected {expected}")]
    Size {
        kind: u32,
        len: usize,
        expected: usize,
    },
    /// Data records are read in place, so they must start on an 8-byte boundary (the ring
    /// and a [`Batch`] keep them there).
    #[error("data record at an address that is not a multiple of 8")]
    Misaligned,
}

/// Decodes one record; a data record's header and payload stay in `record`, which must then
/// start on an 8-byte boundary.
pub fn decode(record: &[u8]) -> Result<Event<'_>, DecodeError> {
    Ok(match check(record)? {
        kind::DATA => {
            let header = borrow_header(record)?;
            let start = size_of::<DataEvent>();
            Event::Data {
                header,
                payload: &record[start..start + header.captured as usize],
            }
        }
        kind::CONN_OPEN => Event::Open(copy_out(record)),
        kind::CONN_CLOSE => Event::Close(copy_out(record)),
        kind::PROCESS_EXIT => Event::ProcessExit(copy_out(record)),
        kind::PROCESS_FORK => Event::ProcessFork(copy_out(record)),
        kind::PROCESS_EXEC => Event::ProcessExec(copy_out(record)),
        kind::KERNEL_NOTE => Event::KernelNote(copy_out(record)),
        other => unreachable!("check passed a record of kind {other}"),
    })
}

/// The kind of `record` when it decodes, found without copying it out.
pub fn check(record: &[u8]) -> Result<u32, DecodeError> {
    let word = |at: usize| {
        record
            .get(at..at + 4)
            .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
    };
    let kind = word(0).ok_or(DecodeError::Short { len: record.len() })?;
    // Fixed records must be exactly their struct (the kernel pads ring records to 8 bytes, so
    // they may carry that padding); a data record is its header and then its payload.
    let (expected, exact) = match kind {
        kind::DATA => (size_of::<DataEvent>(), false),
        kind::CONN_OPEN => (size_of::<ConnOpenEvent>(), true),
        kind::CONN_CLOSE => (size_of::<ConnCloseEvent>(), true),
        kind::PROCESS_EXIT => (size_of::<ProcessExitEvent>(), true),
        kind::PROCESS_FORK | kind::PROCESS_EXEC => (size_of::<ProcessEvent>(), true),
        kind::KERNEL_NOTE => (size_of::<KernelNoteEvent>(), true),
        other => return Err(DecodeError::UnknownKind { kind: other }),
    };
    let len = record.len();
    if len < expected || (exact && len >= expected + 8) {
        return Err(DecodeError::Size {
            kind,
            len,
            expected,
        });
    }
    if kind == kind::DATA {
        let captured = word(std::mem::offset_of!(DataEvent, captured)).expect("in the header");
        let expected = expected + captured as usize;
        if len < expected {
            return Err(DecodeError::Size {
                kind,
                len,
                expected,
            });
        }
    }
    Ok(kind)
}

/// Appends `bytes` to `words` from the next 8-byte boundary, the last word's spare bytes zeroed,
/// as the ring keeps records; returns the word it starts at.
fn append_aligned(words: &mut Vec<u64>, bytes: &[u8]) -> usize {
    let start = words.len();
    let len = bytes.len().div_ceil(8);
    words.reserve(len);
    // SAFETY: `reserve` made room for `len` more words after `start`; the last one is zeroed
    // first (the bytes may end inside it), then the bytes are copied over the front, so all
    // `len` words are initialised before `set_len`.
    unsafe {
        let at = words.as_mut_ptr().add(start);
        if len > 0 {
            at.add(len - 1).write(0);
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), at.cast::<u8>(), bytes.len());
        words.set_len(start + len);
    }
    start
}

/// The header of a data record [`check`] passed, in place.
fn borrow_header(record: &[u8]) -> Result<&DataEvent, DecodeError> {
    assert!(
        record.len() >= size_of::<DataEvent>(),
        "a record shorter than its header"
    );
    if !record.as_ptr().cast::<DataEvent>().is_aligned() {
        return Err(DecodeError::Misaligned);
    }
    // SAFETY: DataEvent is Pod (plain integers, any bit pattern is valid, no padding); the
    // buffer holds at least its size, starts at its alignment (checked), and the reference
    // borrows the buffer, which nothing can change meanwhile.
    Ok(unsafe { &*record.as_ptr().cast::<DataEvent>() })
}

/// Copies a `#[repr(C)]` record out of a buffer [`check`] passed.
fn copy_out<T: aya::Pod>(record: &[u8]) -> T {
    assert!(
        record.len() >= size_of::<T>(),
        "a record shorter than its struct"
    );
    // SAFETY: T is Pod (any bit pattern is valid) and the buffer holds at least size_of::<T>()
    // bytes; read_unaligned because ring records are only 8-byte aligned.
    unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<T>()) }
}

/// Test and benchmark helpers: build records as the kernel would.
pub mod encode {
    use netsonde_common::DataEvent;

    /// A record's bytes on an 8-byte boundary, as the ring buffer keeps them.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Record {
        words: Vec<u64>,
        len: usize,
    }

    impl Record {
        pub fn new(bytes: &[u8]) -> Record {
            let mut words = Vec::new();
            super::append_aligned(&mut words, bytes);
            Record {
                words,
                len: bytes.len(),
            }
        }
    }

    impl std::ops::Deref for Record {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            // SAFETY: the first `len` bytes of `words`, all initialised.
            unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
        }
    }

    /// The bytes of a `#[repr(C)]` record.
    pub fn bytes_of<T: aya::Pod>(value: &T) -> Record {
        // SAFETY: Pod types have no padding and any bit pattern; we read exactly their size.
        Record::new(unsafe {
            std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>())
        })
    }

    /// A data record: header followed by its payload.
    pub fn data_record(header: &DataEvent, payload: &[u8]) -> Record {
        let mut out = bytes_of(header).to_vec();
        out.extend_from_slice(payload);
        Record::new(&out)
    }
}

#[cfg(test)]
mod tests {
    use netsonde_common::{direction, syscall};

    use super::*;

    #[test]
    fn decodes_a_data_record_with_payload() {
        let header = DataEvent {
            kind: kind::DATA,
            captured: 5,
            tgid: 10,
            tid: 11,
            fd: 3,
            syscall: syscall::WRITE,
            direction: direction::EGRESS,
            flags: 0,
            sock: 0xffff_8880_0000_1000,
            bytes: 9,
            stream_pos: 100,
            enter_ns: 1,
            exit_ns: 2,
            kernel: netsonde_common::KernelStats {
                packets: 2,
                bytes: 140,
                ..Default::default()
            },
            h2_frame: 104,
        };
        let record = encode::data_record(&header, b"hello");
        assert_eq!(
            decode(&record),
            Ok(Event::Data {
                header: &header,
                payload: b"hello"
            })
        );
        // Read in place: the header is the record's own bytes.
        match decode(&record) {
            Ok(Event::Data { header, .. }) => {
                assert_eq!(std::ptr::from_ref(header).cast::<u8>(), record.as_ptr())
            }
            other => panic!("{other:?}"),
        }
        // A data record off its 8-byte boundary is refused, not read unaligned.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&record);
        let shifted = encode::Record::new(&shifted);
        assert_eq!(decode(&shifted[1..]), Err(DecodeError::Misaligned));
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(decode(&[1, 0]), Err(DecodeError::Short { len: 2 }));
        assert_eq!(
            decode(&[9, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::UnknownKind { kind: 9 })
        );
        let header = DataEvent {
            kind: kind::DATA,
            captured: 100,
            ..Default::default()
        };
        let record = encode::data_record(&header, b"only ten b");
        assert_eq!(
            decode(&record),
            Err(DecodeError::Size {
                kind: 1,
                len: 170,
                expected: 260
            })
        );
        let close = encode::bytes_of(&ConnCloseEvent {
            kind: kind::CONN_CLOSE,
            ..Default::default()
        });
        assert_eq!(
            decode(&close[..20]),
            Err(DecodeError::Size {
                kind: 3,
                len: 20,
                expected: 72
            })
        );
        assert!(matches!(decode(&close), Ok(Event::Close(_))));
        let fork = encode::bytes_of(&ProcessEvent {
            kind: kind::PROCESS_FORK,
            tgid: 7,
            parent_tgid: 3,
            ..Default::default()
        });
        match decode(&fork) {
            Ok(Event::ProcessFork(ev)) => assert_eq!((ev.tgid, ev.parent_tgid), (7, 3)),
            other => panic!("{other:?}"),
        }
    }
}
