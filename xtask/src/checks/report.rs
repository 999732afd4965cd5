//! Turning a run's results into what its command prints (problems and a table on
//! stderr for people, one JSON document on stdout for machines) and its exit status.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use super::engine::{round, CheckOptions, CheckResult, Verdict};
use super::render;
use crate::error::Exit;
use crate::output::Format;

/// The exit status for `results`: 1 when a check failed, else 2 when a required
/// check could not run (unless `allow_missing`), else 0.
pub fn exit_code(results: &[CheckResult], allow_missing: bool) -> u8 {
    if results.iter().any(|r| r.result == Verdict::Fail) {
        1
    } else if !allow_missing
        && results
            .iter()
            .any(|r| r.result == Verdict::NotRun && !r.optional)
    {
        2
    } else {
        0
    }
}

#[derive(Serialize)]
struct Report<'a> {
    command: &'a str,
    root: String,
    exit_code: u8,
    passed: usize,
    failed: usize,
    not_run: usize,
    seconds: f64,
    checks: &'a [CheckResult],
}

/// Prints the results (text: problems and the table on stderr, for people; json:
/// one document on stdout) and turns them into the exit status.
pub fn report(
    command: &str,
    root: &Path,
    results: &[CheckResult],
    options: &CheckOptions,
    started: Instant,
) -> anyhow::Result<()> {
    let code = exit_code(results, options.allow_missing);
    let count = |v: Verdict| results.iter().filter(|r| r.result == v).count();
    let seconds = round(started.elapsed().as_secs_f64());
    match options.format {
        Format::Json => {
            let report = Report {
                command,
                root: root.display().to_string(),
                exit_code: code,
                passed: count(Verdict::Pass),
                failed: count(Verdict::Fail),
                not_run: count(Verdict::NotRun),
                seconds,
                checks: results,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&report).context("encoding the report")?
            );
        }
        Format::Text => {
            let details = render::details(results);
            if !details.is_empty() {
                eprint!("{details}");
                eprintln!();
            }
            eprint!("{}", render::table(results));
            eprintln!("{}", render::summary(command, results, seconds, code));
        }
    }
    if code == 0 {
        Ok(())
    } else {
        Err(Exit(code).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(check: &str, verdict: Verdict, optional: bool) -> CheckResult {
        let mut result = CheckResult::not_run(check, "t");
        result.result = verdict;
        result.optional = optional;
        result
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        let pass = result("a", Verdict::Pass, false);
        let fail = result("b", Verdict::Fail, false);
        let missing = result("c", Verdict::NotRun, false);
        let optional = result("d", Verdict::NotRun, true);
        assert_eq!(exit_code(&[pass.clone(), optional.clone()], false), 0);
        assert_eq!(exit_code(&[pass.clone(), missing.clone()], false), 2);
        assert_eq!(exit_code(&[pass.clone(), missing.clone()], true), 0);
        assert_eq!(exit_code(&[fail.clone(), missing.clone()], false), 1);
        assert_eq!(exit_code(&[fail], true), 1);
    }
}
