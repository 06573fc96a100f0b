//! Text written once per exchange (console lines, access logs, address attributes) without
//! going through `core::fmt`.
//!
//! Why: at saturation the console line took about a third of the agent's user-space time,
//! most of it `Display` for socket addresses and integers and the RFC 3339 timestamp
//! (benchmarks/RESULTS.md). Integers go through `itoa`; an IPv4 address is its four octets
//! written that way; the timestamp's date and time change once a second, so that part is
//! formatted once a second and only the milliseconds per line. IPv6 addresses keep `Display`
//! (their zero-run compression is not worth writing again).

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    time::{SystemTime, UNIX_EPOCH},
};

/// Appends an unsigned integer in decimal.
pub fn push_uint(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Appends `n` in decimal, padded with zeros to `width` digits.
pub fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

/// Appends a duration in milliseconds with three decimals and its unit: `12.345ms`.
pub fn push_millis(out: &mut String, d: std::time::Duration) {
    let micros = d.as_micros() as u64;
    push_uint(out, micros / 1000);
    out.push('.');
    push_padded(out, micros % 1000, 3);
    out.push_str("ms");
}

/// Appends an IP address as `Display` writes it.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut buf = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(buf.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends a socket address as `Display` writes it (`1.2.3.4:80`, `[::1]:80`, with a scope id
/// when there is one).
pub fn push_socket_addr(out: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            push_ip(out, IpAddr::V4(*v4.ip()));
            out.push(':');
            push_uint(out, u64::from(v4.port()));
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Writes `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339, UTC, milliseconds), as
/// `humantime::format_rfc3339_millis` does, formatting the part before the dot once a second.
#[derive(Debug, Default)]
pub struct Rfc3339Millis {
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    prefix: String,
}

impl Rfc3339Millis {
    pub fn push(&mut self, out: &mut String, t: SystemTime) {
        // A time before 1970 (none comes from the kernel's clocks) is written as the epoch.
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs();
        if self.second != Some(second) {
            let whole = UNIX_EPOCH + std::time::Duration::from_secs(second);
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            // "…SS" then "Z": keep all but the zone.
            self.prefix.clear();
            self.prefix.push_str(text.trim_end_matches('Z'));
            self.second = Some(second);
        }
        out.push_str(&self.prefix);
        out.push('.');
        push_padded(out, u64::from(since.subsec_millis()), 3);
        out.push('Z');
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, Ipv6Addr, SocketAddrV6},
        time::Duration,
    };

    use super::*;

    #[test]
    fn addresses_read_as_display_writes_them() {
        let ips: [IpAddr; 8] = [
            Ipv4Addr::UNSPECIFIED.into(),
            Ipv4Addr::LOCALHOST.into(),
            Ipv4Addr::BROADCAST.into(),
            Ipv4Addr::new(10, 0, 100, 9).into(),
            Ipv4Addr::new(192, 168, 1, 10).into(),
            Ipv6Addr::LOCALHOST.into(),
            "2001:db8::8a2e:370:7334".parse().unwrap(),
            "::ffff:10.0.0.1".parse().unwrap(),
        ];
        for ip in ips {
            let mut out = String::from("x=");
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x={ip}"));
            for port in [0, 1, 80, 8080, 65535] {
                let addr = SocketAddr::new(ip, port);
                let mut out = String::new();
                push_socket_addr(&mut out, addr);
                assert_eq!(out, addr.to_string());
            }
        }
        let scoped = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 443, 0, 3));
        let mut out = String::new();
        push_socket_addr(&mut out, scoped);
        assert_eq!(out, scoped.to_string());
    }

    #[test]
    fn integers_and_padding() {
        for (n, width, text) in [
            (0, 3, "000"),
            (7, 3, "007"),
            (42, 3, "042"),
            (999, 3, "999"),
            (1234, 3, "1234"),
            (5, 0, "5"),
        ] {
            let mut out = String::new();
            push_padded(&mut out, n, width);
            assert_eq!(out, text);
        }
        let mut out = String::new();
        push_uint(&mut out, u64::MAX);
        assert_eq!(out, u64::MAX.to_string());
    }

    #[test]
    fn timestamps_match_humantime_across_seconds() {
        let mut clock = Rfc3339Millis::default();
        let base = UNIX_EPOCH + Duration::from_millis(1_764_129_600_123);
        // Within one second, across seconds, backwards, the epoch, a leap day, far ahead.
        let times = [
            base,
            base + Duration::from_millis(5),
            base + Duration::from_millis(877),
            base + Duration::from_millis(1_877),
            base - Duration::from_secs(3_600),
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::from_millis(951_782_400_999), // 2000-02-29T00:00:00.999Z
            UNIX_EPOCH + Duration::from_secs(4_102_444_799),     // 2099-12-31T23:59:59Z
        ];
        for t in times {
            let mut out = String::new();
            clock.push(&mut out, t);
            assert_eq!(
                out,
                humantime::format_rfc3339_millis(t).to_string(),
                "{t:?}"
            );
        }
        let mut out = String::new();
        clock.push(&mut out, UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!(out, "1970-01-01T00:00:00.000Z");
    }
}
