//! HTTP downloads that survive a flaky network: timeouts, retries with backoff
//! for transient failures (connection resets, 5xx), never for a 404; resumption
//! with a Range request; progress on stderr. What the bytes mean is the caller's
//! business: each chunk is handed to an [`Observer`] as it is written.
//!
//! The pieces: which redirects are followed (`redirect`), the size and time
//! limits (`limits`), which failures are retried and how (`retry`), the
//! resumable write into a `.part` file (`transfer`), and progress (`progress`).

mod limits;
mod progress;
mod redirect;
mod retry;
mod transfer;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

pub use limits::Limits;
pub use progress::{human_bytes, ProgressStyle};
pub use redirect::{redirect_target, MAX_REDIRECTS};
pub use retry::Unreachable;

use retry::{check_status, not_found, Failure};
use transfer::Transfer;

/// The name the client gives in its User-Agent, before `/<version>`: servers (and
/// the rehearsal's checks) tell the xtask's requests from curl's or Ansible's by it.
pub const USER_AGENT_NAME: &str = "flatcar-capi-builder-xtask";

/// Small files (version.txt, DIGESTS, signatures, keys) are read into memory up
/// to this size; anything larger is not what we asked for.
const SMALL_FILE_LIMIT: u64 = 16 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

/// A finished download: its size and the URL that finally served it.
#[derive(Debug, PartialEq, Eq)]
pub struct Downloaded {
    pub size: u64,
    pub final_url: String,
}

/// The outcome of a request for something that may legitimately be absent.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched<T> {
    Found(T),
    /// The server answered 404 or 410; the status line, e.g. `404 Not Found`.
    NotFound(String),
}

/// Sees every byte of a download in order, as it is written to disk.
pub trait Observer {
    fn bytes(&mut self, chunk: &[u8]) -> anyhow::Result<()>;
    /// The download starts over from the first byte (the server ignored a
    /// Range request): forget everything seen so far.
    fn restart(&mut self) -> anyhow::Result<()>;
}

/// A blocking HTTP client with the project's timeouts and retry policy.
pub struct HttpClient {
    agent: ureq::Agent,
    retries: u32,
    limits: Limits,
    first_backoff: Duration,
    pub progress: ProgressStyle,
}

impl HttpClient {
    /// `retries`: how many times a transient failure is retried (with doubling
    /// backoff from half a second) before giving up.
    pub fn new(retries: u32, progress: ProgressStyle) -> HttpClient {
        HttpClient::with_limits(retries, progress, Limits::default())
    }

    /// [`HttpClient::new`] with other size and time limits.
    pub fn with_limits(retries: u32, progress: ProgressStyle, limits: Limits) -> HttpClient {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // Statuses are ours to judge: a 404 is an answer, a 503 a reason to retry.
            .http_status_as_error(false)
            // Redirects are followed by `request`, which refuses https -> http and
            // knows where the bytes finally came from.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(limits.stall_timeout))
            // A stalled transfer, not a slow one: each read must make progress.
            .timeout_per_read(Some(limits.stall_timeout))
            .user_agent(concat!(
                "flatcar-capi-builder-xtask/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .into();
        HttpClient {
            agent,
            retries,
            limits,
            first_backoff: Duration::from_millis(500),
            progress,
        }
    }

    /// GETs a small file into memory.
    pub fn get_small(&self, url: &str) -> anyhow::Result<Fetched<Vec<u8>>> {
        self.with_retries(url, |_| {
            let (response, _) = self.request(url, 0)?;
            let status = response.status();
            if let Some(not_found) = not_found(status) {
                return Ok(Fetched::NotFound(not_found));
            }
            check_status(url, status)?;
            let mut body = Vec::new();
            let read = response
                .into_body()
                .into_reader()
                .take(SMALL_FILE_LIMIT + 1)
                .read_to_end(&mut body);
            match read {
                Ok(_) if body.len() as u64 > SMALL_FILE_LIMIT => Err(Failure::Permanent(
                    anyhow::anyhow!("{url} is larger than {SMALL_FILE_LIMIT} bytes; that is not the small file expected"),
                )),
                Ok(_) => Ok(Fetched::Found(body)),
                Err(err) => Err(Failure::Transient(format!("reading the response: {err}"))),
            }
        })
    }

    /// Downloads `url` into `part`, resuming after the bytes `part` already
    /// holds (they are replayed to `observer` first, so it sees the whole file).
    /// Returns the file's size and final URL; the file is synced to disk.
    pub fn download(
        &self,
        url: &str,
        part: &Path,
        observer: &mut dyn Observer,
    ) -> anyhow::Result<Fetched<Downloaded>> {
        let mut transfer = Transfer::open(url, part, observer, self.progress, self.limits)?;
        let outcome = self.with_retries(url, |progressed| transfer.attempt(self, progressed));
        transfer
            .progress
            .finish(matches!(outcome, Ok(Fetched::Found(_))));
        let outcome = outcome?;
        if let Fetched::Found(_) = outcome {
            transfer.sync()?;
        }
        Ok(outcome)
    }
}
