//! Whether and when to try again: which failures are transient (a timeout, a
//! reset, a 5xx), which are final (a 404, a refused connection), and the loop
//! that retries with doubling backoff within the download's deadline.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::progress::{clear_bar, ProgressStyle};
use super::HttpClient;

/// Why one attempt failed, and whether another attempt may help.
pub(super) enum Failure {
    Transient(String),
    Permanent(anyhow::Error),
}

impl HttpClient {
    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        (self.first_backoff * 2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(Duration::from_secs(8))
    }

    /// Runs `attempt` until it succeeds, fails permanently, or has failed
    /// transiently `retries + 1` times. An attempt that made progress (returns
    /// `true` in its `Err` transient case via `progressed`) resets the count.
    pub(super) fn with_retries<T>(
        &self,
        url: &str,
        mut attempt: impl FnMut(&mut bool) -> Result<T, Failure>,
    ) -> anyhow::Result<T> {
        let mut failures = 0;
        let started = Instant::now();
        loop {
            let mut progressed = false;
            match attempt(&mut progressed) {
                Ok(value) => return Ok(value),
                Err(Failure::Permanent(err)) => return Err(err),
                Err(Failure::Transient(reason)) => {
                    failures = if progressed { 1 } else { failures + 1 };
                    if failures > self.retries {
                        bail!(
                            "downloading {url} failed: {reason} (gave up after {failures} attempts)"
                        );
                    }
                    let wait = self.backoff(failures);
                    if started.elapsed() + wait > self.limits.deadline {
                        bail!(
                            "downloading {url} failed: {reason}; no retry, the deadline of {} s \
                             (--download-deadline) would pass",
                            self.limits.deadline.as_secs()
                        );
                    }
                    if self.progress != ProgressStyle::Quiet {
                        clear_bar(self.progress);
                        eprintln!(
                            "{url}: {reason}; retrying in {:.1} s ({failures} of {} retries)",
                            wait.as_secs_f32(),
                            self.retries
                        );
                    }
                    std::thread::sleep(wait);
                }
            }
        }
    }
}

pub(super) fn not_found(status: ureq::http::StatusCode) -> Option<String> {
    matches!(status.as_u16(), 404 | 410).then(|| status_line(status))
}

/// Success passes; 408, 429 and 5xx are worth retrying; any other status is final.
pub(super) fn check_status(url: &str, status: ureq::http::StatusCode) -> Result<(), Failure> {
    match status.as_u16() {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(Failure::Transient(format!(
            "the server answered {}",
            status_line(status)
        ))),
        _ => Err(Failure::Permanent(anyhow::anyhow!(
            "{url} answered {}",
            status_line(status)
        ))),
    }
}

pub(super) fn status_line(status: ureq::http::StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The server cannot be reached at all: its name does not resolve, nothing listens
/// on its port, or there is no route to it. Retrying does not help, so it fails at
/// once; a caller may try another source (`deps --install` falls back to the system's
/// Packer). Found in an error's chain with `downcast_ref`.
#[derive(Debug)]
pub struct Unreachable {
    pub url: String,
    pub reason: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (no network? --offline uses only the cache)",
            self.url, self.reason
        )
    }
}

impl std::error::Error for Unreachable {}

/// Whether another attempt may help: a timeout, a reset or a broken connection may
/// pass; a name that does not resolve or a refused connection will not.
pub(super) fn classify(url: &str, err: ureq::Error) -> Failure {
    let unreachable = |reason: String| {
        Failure::Permanent(anyhow::Error::new(Unreachable {
            url: url.to_owned(),
            reason,
        }))
    };
    match err {
        ureq::Error::HostNotFound => unreachable("host not found".to_owned()),
        ureq::Error::Io(io) if is_unreachable(&io) => unreachable(io.to_string()),
        ureq::Error::Io(_)
        | ureq::Error::Timeout(_)
        | ureq::Error::Protocol(_)
        | ureq::Error::ConnectionFailed => Failure::Transient(err.to_string()),
        other => Failure::Permanent(anyhow::anyhow!("{url}: {other}")),
    }
}

/// A read that waited `--stall-timeout` for a byte.
pub(super) fn is_timeout(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::TimedOut
        || matches!(
            err.get_ref().and_then(|e| e.downcast_ref::<ureq::Error>()),
            Some(ureq::Error::Timeout(_))
        )
}

fn is_unreachable(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable
    ) ||
        // The standard library reports a failed getaddrinfo with this text and no
        // kind of its own (ureq resolves with `to_socket_addrs`).
        err.to_string().contains("failed to lookup address information")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback port that nothing listens on: connecting is refused.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// Fails at once, in one attempt, with an `Unreachable` naming the URL.
    fn assert_fails_fast_as_unreachable(url: &str) {
        let client = HttpClient::new(4, ProgressStyle::Quiet);
        let started = Instant::now();
        let err = client.get_small(url).unwrap_err();
        let unreachable = err
            .downcast_ref::<Unreachable>()
            .unwrap_or_else(|| panic!("not classified as unreachable: {err:#}"));
        assert_eq!(unreachable.url, url);
        // Four retries would wait 0.5 + 1 + 2 + 4 s.
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{err:#} took {:?}",
            started.elapsed()
        );
        assert!(!err.to_string().contains("gave up after"), "{err:#}");
    }

    #[test]
    fn a_refused_connection_is_not_retried() {
        assert_fails_fast_as_unreachable(&format!("http://127.0.0.1:{}/x", closed_port()));
    }

    #[test]
    fn a_name_that_does_not_resolve_is_not_retried() {
        // `.invalid` is reserved never to resolve (RFC 6761): the resolver answers at
        // once and no connection is attempted anywhere.
        assert_fails_fast_as_unreachable("http://releases.example.invalid/packer/");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let client = HttpClient::new(4, ProgressStyle::Quiet);
        assert_eq!(client.backoff(1), Duration::from_millis(500));
        assert_eq!(client.backoff(2), Duration::from_secs(1));
        assert_eq!(client.backoff(3), Duration::from_secs(2));
        assert_eq!(client.backoff(10), Duration::from_secs(8));
    }
}
