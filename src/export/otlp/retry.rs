//! When to retry a failed export, and how long to wait: pure rules, per the OTLP
//! specification's "failures" sections.

use std::time::Duration;

use tonic::Code;

use crate::config::export::RetryConfig;

/// What to do after a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try again, after the server's requested delay if it named one.
    Retry(Option<Duration>),
    /// The data will never be accepted: drop it.
    Drop,
}

/// gRPC: these codes mean "try later"; RESOURCE_EXHAUSTED only when the server sent RetryInfo
/// (the server says when it can take more). Every other code is permanent when the server sent
/// it; `transport` marks a status the client library made up for a broken connection (a
/// collector that died mid-request: `Unknown` or `Internal` over a reset stream), which never
/// reached the server's judgement and is retried like a refused connection.
pub fn grpc_verdict(
    code: Code,
    retry_info_delay: Option<Option<Duration>>,
    transport: bool,
) -> Verdict {
    if transport {
        return Verdict::Retry(None);
    }
    match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Verdict::Retry(retry_info_delay.flatten()),
        Code::ResourceExhausted => match retry_info_delay {
            Some(delay) => Verdict::Retry(delay),
            None => Verdict::Drop,
        },
        _ => Verdict::Drop,
    }
}

/// HTTP: 429, 502, 503 and 504 are retryable, after `Retry-After` if given (seconds; an
/// HTTP-date is not honoured and falls back to backoff). Every other status is permanent.
pub fn http_verdict(status: u16, retry_after: Option<&str>) -> Verdict {
    match status {
        429 | 502 | 503 | 504 => Verdict::Retry(
            retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        ),
        _ => Verdict::Drop,
    }
}

/// The wait before retry number `attempt` (1 = the first retry): exponential from the
/// initial backoff, capped, with `jitter` in [0, 1) taking off up to half; a server-requested
/// delay wins (capped at the max backoff). `None` once `elapsed` plus the wait would pass the
/// retry budget.
pub fn next_delay(
    config: &RetryConfig,
    attempt: u32,
    server_delay: Option<Duration>,
    jitter: f64,
    elapsed: Duration,
) -> Option<Duration> {
    let initial = Duration::from_millis(config.initial_backoff_ms);
    let max = Duration::from_millis(config.max_backoff_ms);
    let delay = match server_delay {
        Some(d) => d.min(max),
        None => {
            let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
            let capped = exp.min(max);
            capped.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
        }
    };
    (elapsed + delay <= Duration::from_millis(config.max_elapsed_ms)).then_some(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes() {
        let five = Some(Duration::from_secs(5));
        for (code, info, expected) in [
            (Code::Unavailable, None, Verdict::Retry(None)),
            (Code::Unavailable, Some(five), Verdict::Retry(five)),
            (Code::DeadlineExceeded, None, Verdict::Retry(None)),
            (Code::Cancelled, None, Verdict::Retry(None)),
            (Code::Aborted, None, Verdict::Retry(None)),
            (Code::OutOfRange, None, Verdict::Retry(None)),
            (Code::DataLoss, None, Verdict::Retry(None)),
            (Code::ResourceExhausted, None, Verdict::Drop),
            (Code::ResourceExhausted, Some(five), Verdict::Retry(five)),
            (Code::ResourceExhausted, Some(None), Verdict::Retry(None)),
            (Code::InvalidArgument, None, Verdict::Drop),
            (Code::Unauthenticated, None, Verdict::Drop),
            (Code::PermissionDenied, None, Verdict::Drop),
            (Code::Unimplemented, None, Verdict::Drop),
            (Code::Internal, None, Verdict::Drop),
        ] {
            assert_eq!(
                grpc_verdict(code, info, false),
                expected,
                "{code:?} {info:?}"
            );
        }
        // The same codes made up by the client for a broken connection are retried.
        for code in [Code::Unknown, Code::Internal, Code::Unavailable] {
            assert_eq!(grpc_verdict(code, None, true), Verdict::Retry(None));
        }
    }

    #[test]
    fn http_statuses() {
        for (status, retry_after, expected) in [
            (429, None, Verdict::Retry(None)),
            (429, Some("7"), Verdict::Retry(Some(Duration::from_secs(7)))),
            (
                503,
                Some(" 2 "),
                Verdict::Retry(Some(Duration::from_secs(2))),
            ),
            (
                503,
                Some("Wed, 21 Oct 2026 07:28:00 GMT"),
                Verdict::Retry(None),
            ),
            (502, None, Verdict::Retry(None)),
            (504, None, Verdict::Retry(None)),
            (400, None, Verdict::Drop),
            (401, None, Verdict::Drop),
            (404, None, Verdict::Drop),
            (413, None, Verdict::Drop),
            (500, None, Verdict::Drop),
        ] {
            assert_eq!(http_verdict(status, retry_after), expected, "{status}");
        }
    }

    #[test]
    fn backoff_grows_caps_and_gives_up() {
        let c = RetryConfig {
            initial_backoff_ms: 1000,
            max_backoff_ms: 5000,
            max_elapsed_ms: 20_000,
        };
        let s = Duration::from_secs;
        let zero = Duration::ZERO;
        for (attempt, server, jitter, elapsed, expected) in [
            (1, None, 0.0, zero, Some(s(1))),
            (2, None, 0.0, zero, Some(s(2))),
            (3, None, 0.0, zero, Some(s(4))),
            (4, None, 0.0, zero, Some(s(5))),
            (40, None, 0.0, zero, Some(s(5))),
            (2, None, 1.0, zero, Some(s(1))),
            (1, Some(s(3)), 0.9, zero, Some(s(3))),
            (1, Some(s(60)), 0.0, zero, Some(s(5))),
            (3, None, 0.0, s(16), Some(s(4))),
            (3, None, 0.0, s(17), None),
        ] {
            assert_eq!(
                next_delay(&c, attempt, server, jitter, elapsed),
                expected,
                "attempt {attempt} server {server:?} jitter {jitter} elapsed {elapsed:?}"
            );
        }
    }
}
