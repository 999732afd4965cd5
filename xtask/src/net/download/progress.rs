//! Progress of a download on stderr: a bar redrawn in place on a terminal,
//! a line every few seconds in logs, or nothing.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

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

/// Progress of one download on stderr.
pub(super) struct Progress {
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
    pub(super) fn new(style: ProgressStyle, name: &str, resumed: u64) -> Progress {
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

    pub(super) fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    pub(super) fn note(&mut self, message: &str) {
        if self.style != ProgressStyle::Quiet {
            clear_bar(self.style);
            eprintln!("{}: {message}", self.name);
        }
        self.resumed = 0;
        self.done = 0;
    }

    pub(super) fn update(&mut self, done: u64) {
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

    pub(super) fn finish(&mut self, success: bool) {
        match (self.style, success) {
            (ProgressStyle::Quiet, _) => {}
            (_, true) => self.show(true),
            (ProgressStyle::Bar, false) => clear_bar(self.style),
            (ProgressStyle::Lines, false) => {}
        }
    }
}

pub(super) fn clear_bar(style: ProgressStyle) {
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
