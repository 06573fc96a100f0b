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

    /// Waits until records are available, then passes each (at most `max` of them) to `each`.
    /// Returns how many were read.
    pub async fn read_batch(
        &mut self,
        max: usize,
        mut each: impl FnMut(&[u8]),
    ) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            let ring = guard.get_inner_mut();
            let mut n = 0;
            while n < max {
                let Some(item) = ring.next() else { break };
                each(&item);
                n += 1;
            }
            if n < max {
                // Drained: wait for the next wake-up.
                guard.clear_ready();
            }
            if n > 0 {
                return Ok(n);
            }
        }
    }

    /// Reads whatever is left without waiting (at shutdown, after the programs are detached).
    pub fn drain(&mut self, mut each: impl FnMut(&[u8])) -> usize {
        let ring = self.fd.get_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
            each(&item);
            n += 1;
        }
        n
    }
}
