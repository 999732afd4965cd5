//! The checks' results as text for people: each failed or not-run check with its
//! problems, the summary table, and the closing line. Pure: the engine prints them.

use super::engine::{CheckResult, Problem, Verdict};
use crate::table;

/// `file:line:column: message`, then the detail indented.
fn problem(problem: &Problem) -> String {
    let mut location = String::new();
    if let Some(file) = &problem.file {
        location += file;
        if let Some(line) = problem.line {
            location += &format!(":{line}");
            if let Some(column) = problem.column {
                location += &format!(":{column}");
            }
        }
        location += ": ";
    }
    let mut text = format!("{location}{}", problem.message);
    if let Some(detail) = &problem.detail {
        for line in detail.lines() {
            text += &format!("\n    {line}");
        }
    }
    text
}

/// Each failed or not-run check with its problems, and notes of passing ones.
pub fn details(results: &[CheckResult]) -> String {
    let mut out = String::new();
    for r in results {
        let heading = format!("{} ({})", r.check, r.target);
        match r.result {
            Verdict::Fail => {
                out += &format!("FAIL {heading}\n");
                for p in &r.problems {
                    out += &indent(&problem(p));
                }
            }
            Verdict::NotRun => {
                let optional = if r.optional { " (optional)" } else { "" };
                out += &format!(
                    "NOT RUN{optional} {heading}: {}\n",
                    r.reason.as_deref().unwrap_or("")
                );
                if let Some(hint) = r.hint.as_deref().filter(|h| !h.is_empty()) {
                    out += &format!("  to install: {hint}\n");
                }
            }
            Verdict::Pass if !r.notes.is_empty() => out += &format!("pass {heading}\n"),
            Verdict::Pass => {}
        }
        for note in &r.notes {
            out += &indent(&format!("note: {note}"));
        }
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

pub fn table(results: &[CheckResult]) -> String {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let result = match (r.result, r.cached, r.optional) {
                (Verdict::Pass, true, _) => "pass (cached)",
                (Verdict::Pass, false, _) => "pass",
                (Verdict::Fail, _, _) => "FAIL",
                (Verdict::NotRun, _, true) => "not run (optional)",
                (Verdict::NotRun, _, false) => "NOT RUN",
            };
            let time = if r.result == Verdict::NotRun {
                "-".to_owned()
            } else {
                format!("{:.2}s", r.seconds)
            };
            vec![r.check.clone(), r.target.clone(), result.to_owned(), time]
        })
        .collect();
    table::render(&["check", "target", "result", "time"], &rows)
}

/// The closing line: how many passed (and were cached), failed and did not run, and
/// what to do when a required tool is missing (exit status 2).
pub fn summary(command: &str, results: &[CheckResult], seconds: f64, code: u8) -> String {
    let count = |v: Verdict| results.iter().filter(|r| r.result == v).count();
    let cached = results.iter().filter(|r| r.cached).count();
    let mut summary = format!("{command}: {} passed", count(Verdict::Pass));
    if cached > 0 {
        summary += &format!(" ({cached} unchanged since they last passed)");
    }
    if count(Verdict::Fail) > 0 {
        summary += &format!(", {} FAILED", count(Verdict::Fail));
    }
    if count(Verdict::NotRun) > 0 {
        summary += &format!(", {} not run", count(Verdict::NotRun));
    }
    summary += &format!(" in {seconds:.2}s");
    if code == 2 {
        summary += "; install the missing tools (hints above) or pass --allow-missing";
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(check: &str, verdict: Verdict) -> CheckResult {
        let mut result = CheckResult::not_run(check, "t");
        result.result = verdict;
        result.seconds = 0.25;
        result
    }

    #[test]
    fn table_and_details_read_well() {
        let mut fail = result("json", Verdict::Fail);
        fail.problems.push(
            Problem::new("trailing comma")
                .in_file("images/capi/packer/config/cni.json")
                .at(3, Some(1))
                .with_detail("3 | }\n  | ^"),
        );
        let mut missing = result("ignition-validate", Verdict::NotRun);
        missing.reason = Some("ignition-validate is not installed".into());
        missing.hint = Some("sudo apt-get install ignition".into());
        let mut cached = result("layering", Verdict::Pass);
        cached.cached = true;
        let results = vec![fail, missing, cached];
        expect_test::expect![[r#"
            FAIL json (t)
              images/capi/packer/config/cni.json:3:1: trailing comma
                  3 | }
                    | ^
            NOT RUN ignition-validate (t): ignition-validate is not installed
              to install: sudo apt-get install ignition
        "#]]
        .assert_eq(&details(&results));
        expect_test::expect![[r#"
            check              target  result         time
            json               t       FAIL           0.25s
            ignition-validate  t       NOT RUN        -
            layering           t       pass (cached)  0.25s
        "#]]
        .assert_eq(&table(&results));
        expect_test::expect![[
            "validate: 1 passed (1 unchanged since they last passed), 1 FAILED, 1 not run in 1.50s"
        ]]
        .assert_eq(&summary("validate", &results, 1.5, 1));
    }
}
