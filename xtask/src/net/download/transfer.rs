//! One resumable download into a `.part` file: the bytes an earlier run left are
//! replayed to the observer, the server's answer to the Range request decides
//! whether to append or start over, and the body is written under the limits.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use super::progress::{Progress, ProgressStyle};
use super::retry::{check_status, is_timeout, not_found, status_line, Failure};
use super::{Downloaded, Fetched, HttpClient, Limits, Observer, CHUNK};

/// What to do with the answer to a (possibly ranged) GET, decided from its head.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Append the body to the bytes already there; the whole file's size, if known.
    Append { total: Option<u64> },
    /// Empty the partial file (saying `why`), then write this body from its first byte.
    RestartWithBody {
        why: &'static str,
        total: Option<u64>,
    },
    /// Empty the partial file (saying `why`) and try again: `reason`.
    RestartAndRetry {
        why: &'static str,
        reason: &'static str,
    },
    /// `Content-Range: bytes */<size>` with our size: an earlier run got every byte.
    Complete,
    /// Not an answer a download can use.
    Unexpected,
}

/// `have`: the bytes already in the partial file (the Range request asked for the rest).
fn plan(status: u16, have: u64, content_length: Option<u64>, content_range: Option<&str>) -> Plan {
    match status {
        206 if have > 0 => match content_range.and_then(parse_content_range) {
            Some((start, total)) if start == have => Plan::Append {
                total: total.or(content_length.map(|len| have + len)),
            },
            _ => Plan::RestartAndRetry {
                why: "the server answered the Range request with another range; starting over",
                reason: "unexpected Content-Range",
            },
        },
        200 if have > 0 => Plan::RestartWithBody {
            why:
                "the server does not resume downloads (it ignored the Range request); starting over",
            total: content_length,
        },
        200 => Plan::Append {
            total: content_length,
        },
        416 if have > 0 => {
            let size = content_range
                .and_then(|v| v.trim().strip_prefix("bytes */"))
                .and_then(|v| v.trim().parse::<u64>().ok());
            if size == Some(have) {
                Plan::Complete
            } else {
                Plan::RestartAndRetry {
                    why: "the partial download does not fit the file on the server; starting over",
                    reason: "416 Range Not Satisfiable",
                }
            }
        }
        _ => Plan::Unexpected,
    }
}

/// One download in progress: its partial file, who sees the bytes, and its limits.
pub(super) struct Transfer<'a> {
    url: &'a str,
    part: &'a Path,
    file: File,
    /// The bytes in `file` (all of them seen by `observer`).
    have: u64,
    observer: &'a mut dyn Observer,
    pub(super) progress: Progress,
    limits: Limits,
    deadline: Instant,
}

impl<'a> Transfer<'a> {
    /// Opens `part` and replays what it holds to `observer`.
    pub(super) fn open(
        url: &'a str,
        part: &'a Path,
        observer: &'a mut dyn Observer,
        style: ProgressStyle,
        limits: Limits,
    ) -> anyhow::Result<Transfer<'a>> {
        // Never through a link planted at the predictable `.part` name.
        let mut file = crate::fsx::open_no_follow(
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true),
            part,
        )?;
        let have = replay(&mut file, part, observer)?;
        let name = url.rsplit('/').next().unwrap_or(url);
        let progress = Progress::new(style, name, have);
        Ok(Transfer {
            url,
            part,
            file,
            have,
            observer,
            progress,
            limits,
            deadline: Instant::now() + limits.deadline,
        })
    }

    /// One request for the bytes still missing, and its body written.
    /// `progressed`: some bytes were written (a later failure is a new start).
    pub(super) fn attempt(
        &mut self,
        client: &HttpClient,
        progressed: &mut bool,
    ) -> Result<Fetched<Downloaded>, Failure> {
        let url = self.url;
        let (response, final_url) = client.request(url, self.have)?;
        if let Some(not_found) = not_found(response.status()) {
            return Ok(Fetched::NotFound(not_found));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let content_range = header("content-range");
        let status = response.status();
        let total = match plan(
            status.as_u16(),
            self.have,
            content_length,
            content_range.as_deref(),
        ) {
            Plan::Append { total } => total,
            Plan::RestartWithBody { why, total } => {
                self.progress.note(why);
                self.start_over()?;
                total
            }
            Plan::RestartAndRetry { why, reason } => {
                self.progress.note(why);
                self.start_over()?;
                return Err(Failure::Transient(reason.into()));
            }
            Plan::Complete => {
                return Ok(Fetched::Found(Downloaded {
                    size: self.have,
                    final_url,
                }))
            }
            Plan::Unexpected => {
                check_status(url, status)?;
                return Err(Failure::Permanent(anyhow::anyhow!(
                    "{url} answered {} to a plain GET",
                    status_line(status)
                )));
            }
        };
        let max_size = self.limits.max_size;
        if let Some(total) = total.filter(|&t| t > max_size) {
            let _ = std::fs::remove_file(self.part);
            return Err(Failure::Permanent(anyhow::anyhow!(
                "{url} announces {total} bytes, more than the {max_size} allowed \
                 (--max-image-size); nothing was kept"
            )));
        }
        self.progress.set_total(total);
        self.receive(response.into_body().into_reader(), total, progressed)?;
        let have = self.have;
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
    }

    /// Appends the body to the partial file until it ends, within the limits.
    fn receive(
        &mut self,
        mut reader: impl Read,
        total: Option<u64>,
        progressed: &mut bool,
    ) -> Result<(), Failure> {
        let (url, max_size) = (self.url, self.limits.max_size);
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let have = self.have;
            let n = match reader.read(&mut buffer) {
                Ok(0) => return Ok(()),
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
                let _ = std::fs::remove_file(self.part);
                return Err(Failure::Permanent(anyhow::anyhow!(
                    "{url} sent more than the {max_size} bytes allowed (--max-image-size); \
                     the download was stopped and deleted"
                )));
            }
            if Instant::now() > self.deadline {
                return Err(Failure::Permanent(anyhow::anyhow!(
                    "downloading {url} took longer than the deadline of {} s \
                     (--download-deadline); {have} bytes are kept for the next run to resume",
                    self.limits.deadline.as_secs()
                )));
            }
            self.append(&buffer[..n])?;
            *progressed = true;
            self.progress.update(self.have);
        }
    }

    fn append(&mut self, chunk: &[u8]) -> Result<(), Failure> {
        if let Err(err) = self.file.write_all(chunk) {
            // Out of space: a partial file would only make it worse.
            let _ = std::fs::remove_file(self.part);
            return Err(Failure::Permanent(anyhow::Error::new(err).context(
                format!(
                    "writing {} (is the disk full?); the partial download was deleted",
                    self.part.display()
                ),
            )));
        }
        self.observer.bytes(chunk).map_err(Failure::Permanent)?;
        self.have += chunk.len() as u64;
        Ok(())
    }

    fn start_over(&mut self) -> Result<(), Failure> {
        let part = self.part;
        let mut reset = || -> anyhow::Result<()> {
            self.file
                .set_len(0)
                .with_context(|| format!("truncating {}", part.display()))?;
            self.file
                .seek(SeekFrom::Start(0))
                .with_context(|| format!("rewinding {}", part.display()))?;
            self.observer.restart()
        };
        reset().map_err(Failure::Permanent)?;
        self.have = 0;
        Ok(())
    }

    /// Syncs the finished file to disk.
    pub(super) fn sync(&self) -> anyhow::Result<()> {
        self.file
            .sync_all()
            .with_context(|| format!("syncing {} to disk", self.part.display()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_to_a_range_request_decides_append_or_start_over() {
        assert_eq!(plan(200, 0, Some(9), None), Plan::Append { total: Some(9) });
        assert_eq!(
            plan(206, 4, Some(5), Some("bytes 4-8/9")),
            Plan::Append { total: Some(9) }
        );
        assert_eq!(
            plan(206, 4, Some(5), Some("bytes 4-8/*")),
            Plan::Append { total: Some(9) }
        );
        assert!(matches!(
            plan(206, 4, None, Some("bytes 0-8/9")),
            Plan::RestartAndRetry { .. }
        ));
        assert!(matches!(
            plan(200, 4, Some(9), None),
            Plan::RestartWithBody { total: Some(9), .. }
        ));
        assert_eq!(plan(416, 9, None, Some("bytes */9")), Plan::Complete);
        assert!(matches!(
            plan(416, 4, None, Some("bytes */9")),
            Plan::RestartAndRetry { .. }
        ));
        assert_eq!(plan(206, 0, Some(9), None), Plan::Unexpected);
        assert_eq!(plan(403, 4, None, None), Plan::Unexpected);
    }

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
}
