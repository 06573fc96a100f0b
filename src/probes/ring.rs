//! Reads the ring buffer without blocking the runtime: the map fd is registered with tokio and
//! drained whenever the kernel signals data.

use std::io;

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

/// The ring buffer, readable from async code.
pub struct RingReader {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl RingReader {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the RingBuf owns its fd and mmap for as long as the AsyncFd holds it.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(RingReader { fd })
    }

    /// Waits until the kernel signals that records are waiting. The programs signal only once
    /// a batch has piled up, so callers also [`RingReader::drain`] on a timer.
    pub async fn readable(&mut self) -> io::Result<()> {
        let mut guard = self.fd.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Passes waiting records to `each` without waiting, until none is left or `each` says it
    /// takes no more (returns false).
    pub fn drain(&mut self, mut each: impl FnMut(&[u8]) -> bool) {
        let ring = self.fd.get_mut();
        while let Some(item) = ring.next() {
            if !each(&item) {
                break;
            }
        }
    }
}
