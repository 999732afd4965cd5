//! HTTP downloads that survive a flaky network: timeouts, retries with backoff
//! for transient failures (connection resets, 5xx), never for a 404; resumption
//! with a Range request; progress on stderr. What the bytes mean is the caller's
//! business: each chunk is handed to an [`Observer`] as it is written.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Small files (version.txt, DIGESTS, signatures, keys) are read into memory up
/// to this size; anything larger is not what we asked for.
const SMALL_FILE_LIMIT: u64 = 16 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

/// More redirects than a mirror setup needs are a loop or a detour.
pub const MAX_REDIRECTS: usize = 3;

/// Where a redirect from `from` to `location` leads: `location` resolved
/// against `from` (absolute, `//host/...`, `/path` or a relative path). An
/// https URL may only lead to https: a downgrade would let anyone on the path
/// serve the bytes (and see what is asked).
pub fn redirect_target(from: &str, location: &str) -> Result<String, String> {
    let (scheme, rest) = from
        .split_once("://")
        .ok_or_else(|| format!("{from} is not an absolute URL"))?;
    let location = location.trim();
    let target = if location.contains("://") {
        location.to_owned()
    } else if let Some(authority_path) = location.strip_prefix("//") {
        format!("{scheme}://{authority_path}")
    } else {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        if location.starts_with('/') {
            format!("{scheme}://{authority}{location}")
        } else {
            let path = rest.split(['?', '#']).next().unwrap_or(rest);
            let dir = &path[..path.rfind('/').map_or(path.len(), |i| i + 1)];
            let dir = if dir == authority {
                format!("{dir}/")
            } else {
                dir.to_owned()
            };
            format!("{scheme}://{dir}{location}")
        }
    };
    let target_scheme = target
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase());
    match (
        scheme.to_ascii_lowercase().as_str(),
        target_scheme.as_deref(),
    ) {
        ("https", Some("https")) | ("http", Some("http" | "https")) => Ok(target),
        ("https", Some("http")) => Err(format!(
            "refusing the redirect from https to plain http ({target}): the download would \
             lose its transport security; fix the mirror or use its https URL"
        )),
        _ => Err(format!(
            "refusing the redirect to {target}: only http(s) is followed"
        )),
    }
}

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

/// How progress is shown on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressStyle {
    /// Nothing at all.
    Quiet,
    /// A line every few seconds (logs, CI).
    Lines,
    /// One line redrawn in place (a terminal).
    Bar,
}

impl ProgressStyle {
    /// A bar on a terminal, plain lines otherwise; nothing when `quiet`.
    pub fn for_stderr(quiet: bool) -> ProgressStyle {
        if quiet {
            ProgressStyle::Quiet
        } else if std::io::stderr().is_terminal() {
            ProgressStyle::Bar
        } else {
            ProgressStyle::Lines
        }
    }
}

/// How long and how much one download may take, so that neither an endless
/// stream nor a trickle can hold a run (or fill a disk) for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes a download may have, announced or not.
    pub max_size: u64,
    /// No byte for this long ends an attempt (retried like a broken connection).
    pub stall_timeout: Duration,
    /// The whole download, retries included, ends after this.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            // Flatcar's QEMU images are about 0.5-1.5 GiB; ten times that is a bug or an attack.
            max_size: 16 << 30,
            stall_timeout: Duration::from_secs(60),
            deadline: Duration::from_secs(6 * 3600),
        }
    }
}

/// A blocking HTTP client with the project's timeouts and retry policy.
pub struct HttpClient {
    agent: ureq::Agent,
    retries: u32,
    limits: Limits,
    first_backoff: Duration,
    pub progress: ProgressStyle,
}

/// Why one attempt failed, and whether another attempt may help.
enum Failure {
    Transient(String),
    Permanent(anyhow::Error),
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

    fn backoff(&self, attempt: u32) -> Duration {
        (self.first_backoff * 2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(Duration::from_secs(8))
    }

    /// Runs `attempt` until it succeeds, fails permanently, or has failed
    /// transiently `retries + 1` times. An attempt that made progress (returns
    /// `true` in its `Err` transient case via `progressed`) resets the count.
    fn with_retries<T>(
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

    /// GETs `url`, following at most [`MAX_REDIRECTS`] redirects and never from
    /// https to http. Returns the response and the URL that gave it.
    fn request(
        &self,
        url: &str,
        range_from: u64,
    ) -> Result<(ureq::http::Response<ureq::Body>, String), Failure> {
        let mut current = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.agent.get(&current);
            if range_from > 0 {
                request = request.header("Range", format!("bytes={range_from}-"));
            }
            let response = request.call().map_err(|err| classify(&current, err))?;
            if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
                return Ok((response, current));
            }
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    Failure::Permanent(anyhow::anyhow!(
                        "{current} answered {} without a Location to go to",
                        status_line(response.status())
                    ))
                })?;
            current = redirect_target(&current, location)
                .map_err(|reason| Failure::Permanent(anyhow::anyhow!("{url}: {reason}")))?;
        }
        Err(Failure::Permanent(anyhow::anyhow!(
            "{url} redirected more than {MAX_REDIRECTS} times (last to {current}); \
             a release server does not need that many: check the URL or the mirror"
        )))
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
        // Never through a link planted at the predictable `.part` name.
        let mut file = crate::fsx::open_no_follow(
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true),
            part,
        )?;
        let mut have = replay(&mut file, part, observer)?;
        let name = url.rsplit('/').next().unwrap_or(url);
        let mut progress = Progress::new(self.progress, name, have);
        let deadline = Instant::now() + self.limits.deadline;
        let max_size = self.limits.max_size;
        let outcome = self.with_retries(url, |progressed| {
            let (response, final_url) = self.request(url, have)?;
            let status = response.status().as_u16();
            if let Some(not_found) = not_found(response.status()) {
                return Ok(Fetched::NotFound(not_found));
            }
            let content_length = response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let total = match status {
                206 if have > 0 => {
                    let range = response
                        .headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_content_range);
                    match range {
                        Some((start, total)) if start == have => {
                            total.or(content_length.map(|len| have + len))
                        }
                        _ => {
                            progress.note("the server answered the Range request with another range; starting over");
                            start_over(&mut file, part, observer, &mut have)?;
                            return Err(Failure::Transient("unexpected Content-Range".into()));
                        }
                    }
                }
                200 => {
                    if have > 0 {
                        progress.note("the server does not resume downloads (it ignored the Range request); starting over");
                        start_over(&mut file, part, observer, &mut have)?;
                    }
                    content_length
                }
                416 if have > 0 => {
                    // `Content-Range: bytes */<size>`: an earlier run got every byte.
                    let size = response
                        .headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().strip_prefix("bytes */"))
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    if size == Some(have) {
                        return Ok(Fetched::Found(Downloaded {
                            size: have,
                            final_url,
                        }));
                    }
                    progress.note("the partial download does not fit the file on the server; starting over");
                    start_over(&mut file, part, observer, &mut have)?;
                    return Err(Failure::Transient("416 Range Not Satisfiable".into()));
                }
                _ => {
                    check_status(url, response.status())?;
                    return Err(Failure::Permanent(anyhow::anyhow!(
                        "{url} answered {} to a plain GET",
                        status_line(response.status())
                    )));
                }
            };
            if let Some(total) = total.filter(|&t| t > max_size) {
                let _ = std::fs::remove_file(part);
                return Err(Failure::Permanent(anyhow::anyhow!(
                    "{url} announces {total} bytes, more than the {max_size} allowed \
                     (--max-image-size); nothing was kept"
                )));
            }
            progress.set_total(total);
            let mut reader = response.into_body().into_reader();
            let mut buffer = vec![0u8; CHUNK];
            loop {
                let n = match reader.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(err) if is_timeout(&err) => {
                        return Err(Failure::Transient(format!(
                            "no data for {} s after {have} bytes (--stall-timeout)",
                            self.limits.stall_timeout.as_secs()
                        )));
                    }
                    Err(err) => {
                        let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
                        return Err(Failure::Transient(format!(
                            "the connection broke after {have}{of} bytes ({err})"
                        )));
                    }
                };
                if have + n as u64 > max_size {
                    // An endless stream: what came so far is not the file.
                    let _ = std::fs::remove_file(part);
                    return Err(Failure::Permanent(anyhow::anyhow!(
                        "{url} sent more than the {max_size} bytes allowed (--max-image-size); \
                         the download was stopped and deleted"
                    )));
                }
                if Instant::now() > deadline {
                    return Err(Failure::Permanent(anyhow::anyhow!(
                        "downloading {url} took longer than the deadline of {} s \
                         (--download-deadline); {have} bytes are kept for the next run to resume",
                        self.limits.deadline.as_secs()
                    )));
                }
                let chunk = &buffer[..n];
                if let Err(err) = file.write_all(chunk) {
                    // Out of space: a partial file would only make it worse.
                    let _ = std::fs::remove_file(part);
                    return Err(Failure::Permanent(anyhow::Error::new(err).context(format!(
                        "writing {} (is the disk full?); the partial download was deleted",
                        part.display()
                    ))));
                }
                observer.bytes(chunk).map_err(Failure::Permanent)?;
                have += n as u64;
                *progressed = true;
                progress.update(have);
            }
            match total {
                Some(total) if have < total => Err(Failure::Transient(format!(
                    "the connection closed after {have} of {total} bytes"
                ))),
                Some(total) if have > total => Err(Failure::Permanent(anyhow::anyhow!(
                    "{url} sent {have} bytes, more than the {total} it announced"
                ))),
                _ => Ok(Fetched::Found(Downloaded {
                    size: have,
                    final_url,
                })),
            }
        });
        progress.finish(matches!(outcome, Ok(Fetched::Found(_))));
        let outcome = outcome?;
        if let Fetched::Found(_) = outcome {
            file.sync_all()
                .with_context(|| format!("syncing {} to disk", part.display()))?;
        }
        Ok(outcome)
    }
}

/// Feeds the bytes an earlier attempt left in `file` to `observer`; returns
/// their count and leaves the file positioned at its end.
fn replay(file: &mut File, part: &Path, observer: &mut dyn Observer) -> anyhow::Result<u64> {
    let mut buffer = vec![0u8; CHUNK];
    let mut have = 0u64;
    file.seek(SeekFrom::Start(0))
        .with_context(|| format!("reading {}", part.display()))?;
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", part.display()))?;
        if n == 0 {
            break;
        }
        observer.bytes(&buffer[..n])?;
        have += n as u64;
    }
    Ok(have)
}

fn start_over(
    file: &mut File,
    part: &Path,
    observer: &mut dyn Observer,
    have: &mut u64,
) -> Result<(), Failure> {
    let mut reset = || -> anyhow::Result<()> {
        file.set_len(0)
            .with_context(|| format!("truncating {}", part.display()))?;
        file.seek(SeekFrom::Start(0))
            .with_context(|| format!("rewinding {}", part.display()))?;
        observer.restart()
    };
    reset().map_err(Failure::Permanent)?;
    *have = 0;
    Ok(())
}

fn not_found(status: ureq::http::StatusCode) -> Option<String> {
    matches!(status.as_u16(), 404 | 410).then(|| status_line(status))
}

/// Success passes; 408, 429 and 5xx are worth retrying; any other status is final.
fn check_status(url: &str, status: ureq::http::StatusCode) -> Result<(), Failure> {
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

fn status_line(status: ureq::http::StatusCode) -> String {
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
fn classify(url: &str, err: ureq::Error) -> Failure {
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
fn is_timeout(err: &std::io::Error) -> bool {
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

/// `bytes 100-999/1000` gives (100, Some(1000)); `bytes 100-999/*` (100, None).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let range = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = range.split_once('/')?;
    let (start, _end) = span.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, total))
}

/// Progress of one download on stderr.
struct Progress {
    style: ProgressStyle,
    name: String,
    total: Option<u64>,
    /// Bytes already present when this run began (not counted in the rate).
    resumed: u64,
    done: u64,
    started: Instant,
    last_shown: Option<Instant>,
}

impl Progress {
    fn new(style: ProgressStyle, name: &str, resumed: u64) -> Progress {
        if resumed > 0 && style != ProgressStyle::Quiet {
            eprintln!("{name}: resuming after {}", human_bytes(resumed));
        }
        Progress {
            style,
            name: name.to_owned(),
            total: None,
            resumed,
            done: resumed,
            started: Instant::now(),
            last_shown: None,
        }
    }

    fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    fn note(&mut self, message: &str) {
        if self.style != ProgressStyle::Quiet {
            clear_bar(self.style);
            eprintln!("{}: {message}", self.name);
        }
        self.resumed = 0;
        self.done = 0;
    }

    fn update(&mut self, done: u64) {
        self.done = done;
        let every = match self.style {
            ProgressStyle::Quiet => return,
            ProgressStyle::Lines => Duration::from_secs(5),
            ProgressStyle::Bar => Duration::from_millis(200),
        };
        let now = Instant::now();
        let due = match self.last_shown {
            None => now.duration_since(self.started) >= every,
            Some(last) => now.duration_since(last) >= every,
        };
        if due {
            self.last_shown = Some(now);
            self.show(false);
        }
    }

    fn show(&self, last: bool) {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done.saturating_sub(self.resumed) as f64 / elapsed;
        let line = render_progress(&self.name, self.done, self.total, rate, last);
        match self.style {
            ProgressStyle::Quiet => {}
            ProgressStyle::Lines => eprintln!("{line}"),
            ProgressStyle::Bar => {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{line}");
                if last {
                    let _ = writeln!(err);
                }
                let _ = err.flush();
            }
        }
    }

    fn finish(&mut self, success: bool) {
        match (self.style, success) {
            (ProgressStyle::Quiet, _) => {}
            (_, true) => self.show(true),
            (ProgressStyle::Bar, false) => clear_bar(self.style),
            (ProgressStyle::Lines, false) => {}
        }
    }
}

fn clear_bar(style: ProgressStyle) {
    if style == ProgressStyle::Bar {
        eprint!("\r\x1b[2K");
    }
}

/// `flatcar_production_qemu_image.img: 512.0 MiB of 1.0 GiB (50%), 98.3 MiB/s, ETA 5 s`
fn render_progress(name: &str, done: u64, total: Option<u64>, rate: f64, last: bool) -> String {
    let rate_text = format!("{}/s", human_bytes(rate as u64));
    match (total, last) {
        (_, true) => format!("{name}: {} done, {rate_text}", human_bytes(done)),
        (Some(total), false) if total > 0 => {
            let percent = done.min(total) * 100 / total;
            let eta = if rate > 0.0 {
                format!(
                    "ETA {} s",
                    ((total.saturating_sub(done)) as f64 / rate).ceil()
                )
            } else {
                "ETA unknown".to_owned()
            };
            format!(
                "{name}: {} of {} ({percent}%), {rate_text}, {eta}",
                human_bytes(done),
                human_bytes(total)
            )
        }
        _ => format!("{name}: {}, {rate_text}", human_bytes(done)),
    }
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-999/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

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
    fn finding_5_redirects_resolve_and_never_downgrade_to_http() {
        let from = "https://mirror.example/stable/amd64-usr/1.2.3/f.img?x=1";
        assert_eq!(
            redirect_target(from, "https://cdn.example/f.img").as_deref(),
            Ok("https://cdn.example/f.img")
        );
        assert_eq!(
            redirect_target(from, "//cdn.example/a/f.img").as_deref(),
            Ok("https://cdn.example/a/f.img")
        );
        assert_eq!(
            redirect_target(from, "/other/f.img").as_deref(),
            Ok("https://mirror.example/other/f.img")
        );
        assert_eq!(
            redirect_target(from, "g.img").as_deref(),
            Ok("https://mirror.example/stable/amd64-usr/1.2.3/g.img")
        );
        assert_eq!(
            redirect_target("http://h:8080", "x").as_deref(),
            Ok("http://h:8080/x")
        );
        assert_eq!(
            redirect_target("http://h/a", "https://h/b").as_deref(),
            Ok("https://h/b")
        );
        let downgrade = redirect_target(from, "http://cdn.example/f.img").unwrap_err();
        assert!(
            downgrade.contains("from https to plain http"),
            "{downgrade}"
        );
        assert!(redirect_target(from, "HTTP://cdn.example/f.img").is_err());
        assert!(redirect_target(from, "file:///etc/passwd").is_err());
        assert!(redirect_target(from, "ftp://x/f").is_err());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let client = HttpClient::new(4, ProgressStyle::Quiet);
        assert_eq!(client.backoff(1), Duration::from_millis(500));
        assert_eq!(client.backoff(2), Duration::from_secs(1));
        assert_eq!(client.backoff(3), Duration::from_secs(2));
        assert_eq!(client.backoff(10), Duration::from_secs(8));
    }

    #[test]
    fn progress_lines_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(
            render_progress("f.img", 512 << 20, Some(1 << 30), (100 << 20) as f64, false),
            "f.img: 512.0 MiB of 1.0 GiB (50%), 100.0 MiB/s, ETA 6 s"
        );
        assert_eq!(
            render_progress("f.img", 3 << 20, None, 0.0, false),
            "f.img: 3.0 MiB, 0 B/s"
        );
        assert_eq!(
            render_progress("f.img", 1 << 30, Some(1 << 30), (200 << 20) as f64, true),
            "f.img: 1.0 GiB done, 200.0 MiB/s"
        );
    }
}
