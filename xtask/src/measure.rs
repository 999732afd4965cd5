//! Measuring for `cargo xtask bench`: the wall time and peak memory of a command, a
//! run alternated with its baseline, min/median/max of a series, and the report's
//! rows, each holding a figure against its target, as one table.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::table;

/// Min, median and max of one series, in the row's unit.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

/// The statistics of `samples`, in seconds; at least one sample.
pub fn stats(samples: &[Duration]) -> Stats {
    let mut s: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    s.sort_by(f64::total_cmp);
    Stats {
        min: s[0],
        median: s[s.len() / 2],
        max: s[s.len() - 1],
    }
}

/// One row of the report.
#[derive(Debug, Serialize)]
pub struct Row {
    pub name: String,
    /// `s` for times, `MiB` for memory.
    pub unit: &'static str,
    pub ours: Stats,
    pub baseline: Option<Stats>,
    /// What the baseline is, in words.
    pub baseline_is: String,
    /// ours.median / baseline.median.
    pub ratio: Option<f64>,
    pub target: String,
    pub met: bool,
    pub iterations: usize,
    pub note: String,
}

/// Runs `ours` and `baseline` alternately after one warm-up each.
pub fn side_by_side(
    iterations: usize,
    mut ours: impl FnMut() -> anyhow::Result<Duration>,
    mut baseline: impl FnMut() -> anyhow::Result<Duration>,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    ours()?;
    baseline()?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        a.push(ours()?);
        b.push(baseline()?);
    }
    Ok((a, b))
}

/// Wall time of a command that must succeed.
pub fn timed(command: &mut Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("starting a benchmark command")?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "{command:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

/// Peak resident memory (KiB) and wall time of a command, from wait4(2).
pub fn timed_with_rss(command: &mut Command) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a benchmark command")?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child; std never waits for it (we do not call wait).
    let waited = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let took = started.elapsed();
    if waited < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{command:?} failed (status {status})");
    }
    Ok((took, usage.ru_maxrss as u64))
}

/// The rows as the report's table.
pub fn render(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let secs = |s: &Stats| {
                format!(
                    "{:.3}{u} ({:.3}..{:.3})",
                    s.median,
                    s.min,
                    s.max,
                    u = r.unit
                )
            };
            vec![
                r.name.clone(),
                secs(&r.ours),
                r.baseline.as_ref().map_or(r.baseline_is.clone(), |b| {
                    format!("{} {}", secs(b), r.baseline_is)
                }),
                r.ratio.map_or("-".into(), |x| format!("{x:.2}")),
                r.target.clone(),
                if r.met { "met".into() } else { "MISSED".into() },
                format!(
                    "{}{}",
                    r.iterations,
                    if r.note.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.note)
                    }
                ),
            ]
        })
        .collect();
    table::render(
        &[
            "bench",
            "ours median (min..max)",
            "baseline",
            "ratio",
            "target",
            "verdict",
            "runs",
        ],
        &cells,
    )
}

/// A row comparing `ours` with `base`: met when the median ratio is at most
/// `max_ratio`.
pub fn ratio_row(
    name: &str,
    iterations: usize,
    ours: &[Duration],
    base: &[Duration],
    baseline_is: &str,
    max_ratio: f64,
) -> Row {
    let (o, b) = (stats(ours), stats(base));
    let ratio = o.median / b.median;
    Row {
        name: name.into(),
        unit: "s",
        ours: o,
        baseline: Some(b),
        baseline_is: baseline_is.into(),
        ratio: Some(ratio),
        target: format!("ratio <= {max_ratio}"),
        met: ratio <= max_ratio,
        iterations,
        note: String::new(),
    }
}

/// A row holding `ours` against an absolute `limit` on its median.
pub fn absolute_row(
    name: &str,
    iterations: usize,
    ours: &[Duration],
    limit: Duration,
    note: &str,
) -> Row {
    let o = stats(ours);
    Row {
        name: name.into(),
        unit: "s",
        ours: o,
        baseline: None,
        baseline_is: "-".into(),
        ratio: None,
        target: format!("< {} ms", limit.as_millis()),
        met: o.median < limit.as_secs_f64(),
        iterations,
        note: note.into(),
    }
}

/// The machine the figures were measured on, for the report: its cores and memory.
pub fn machine() -> String {
    format!("{} cores, {} GiB memory", cores(), memory_gib())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn memory_gib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| (kib + (1 << 19)) >> 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_the_middle_sample() {
        let s = stats(&[
            Duration::from_millis(30),
            Duration::from_millis(10),
            Duration::from_millis(20),
        ]);
        assert_eq!((s.min, s.median, s.max), (0.01, 0.02, 0.03));
    }

    #[test]
    fn ratio_rows_judge_against_the_target() {
        let fast = [Duration::from_millis(50)];
        let slow = [Duration::from_millis(100)];
        assert!(ratio_row("x", 1, &fast, &slow, "", 0.6).met);
        assert!(!ratio_row("x", 1, &slow, &fast, "", 0.6).met);
        assert!(absolute_row("x", 1, &fast, Duration::from_millis(60), "").met);
    }
}
