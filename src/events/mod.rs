//! Decodes raw ring-buffer records into typed events. Pure: no I/O, no state.

pub mod clock;

use netsonde_common::{
    ConnCloseEvent, ConnOpenEvent, DataEvent, KernelNoteEvent, ProcessEvent, ProcessExitEvent, kind,
};

pub use clock::KernelClock;

/// One record from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A read- or write-like syscall on a TCP socket, with the captured payload prefix.
    Data { header: DataEvent, payload: Vec<u8> },
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

impl Event {
    /// Whether the process-lifecycle stage wants it.
    pub fn is_lifecycle(&self) -> bool {
        matches!(
            self,
            Event::ProcessExit(_) | Event::ProcessFork(_) | Event::ProcessExec(_)
        )
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
}

/// Decodes one record.
pub fn decode(record: &[u8]) -> Result<Event, DecodeError> {
    let kind = u32::from_ne_bytes(
        record
            .get(..4)
            .ok_or(DecodeError::Short { len: record.len() })?
            .try_into()
            .expect("4 bytes"),
    );
    match kind {
        kind::DATA => {
            let header: DataEvent = read_struct(record, kind, false)?;
            let start = size_of::<DataEvent>();
            let end = start + header.captured as usize;
            if record.len() < end {
                return Err(DecodeError::Size {
                    kind,
                    len: record.len(),
                    expected: end,
                });
            }
            Ok(Event::Data {
                header,
                payload: record[start..end].to_vec(),
            })
        }
        kind::CONN_OPEN => Ok(Event::Open(read_struct(record, kind, true)?)),
        kind::CONN_CLOSE => Ok(Event::Close(read_struct(record, kind, true)?)),
        kind::PROCESS_EXIT => Ok(Event::ProcessExit(read_struct(record, kind, true)?)),
        kind::PROCESS_FORK => Ok(Event::ProcessFork(read_struct(record, kind, true)?)),
        kind::PROCESS_EXEC => Ok(Event::ProcessExec(read_struct(record, kind, true)?)),
        kind::KERNEL_NOTE => Ok(Event::KernelNote(read_struct(record, kind, true)?)),
        other => Err(DecodeError::UnknownKind { kind: other }),
    }
}

/// Copies a `#[repr(C)]` record out of the buffer. `exact`: the record must be exactly the
/// struct (fixed-size records); otherwise at least (a data header with payload after it).
fn read_struct<T: aya::Pod>(record: &[u8], kind: u32, exact: bool) -> Result<T, DecodeError> {
    let expected = size_of::<T>();
    // The kernel pads ring records to 8 bytes; fixed records may carry that padding.
    let fits = if exact {
        record.len() >= expected && record.len() < expected + 8
    } else {
        record.len() >= expected
    };
    if !fits {
        return Err(DecodeError::Size {
            kind,
            len: record.len(),
            expected,
        });
    }
    // SAFETY: T is Pod (any bit pattern is valid) and the buffer holds at least size_of::<T>()
    // bytes; read_unaligned because ring records are only 8-byte aligned.
    Ok(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<T>()) })
}

/// Test and benchmark helpers: build records as the kernel would.
pub mod encode {
    use netsonde_common::DataEvent;

    /// The bytes of a `#[repr(C)]` record.
    pub fn bytes_of<T: aya::Pod>(value: &T) -> Vec<u8> {
        // SAFETY: Pod types have no padding and any bit pattern; we read exactly their size.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    /// A data record: header followed by its payload.
    pub fn data_record(header: &DataEvent, payload: &[u8]) -> Vec<u8> {
        let mut out = bytes_of(header);
        out.extend_from_slice(payload);
        out
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
                header,
                payload: b"hello".to_vec()
            })
        );
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
