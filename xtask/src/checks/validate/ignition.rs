//! The Ignition configs' check: `ignition-validate`, its report as located problems.

use std::path::Path;
use std::path::PathBuf;

use anyhow::Context;

use crate::checks::engine::{Check, Outcome, Problem};
use crate::checks::tool_output::{capture, relative_output, tidy_output};
use crate::json_text;

pub fn ignition_check(root: &Path, config: PathBuf) -> Check {
    let path = root.join(&config);
    let shown = config.display().to_string();
    let label = shown.clone();
    Check::new("ignition-validate", label, move |sh, tools| {
        let ran = capture(sh.cmd(tools.path("ignition-validate")).arg(&path))?;
        let output = tidy_output(&relative_output(
            &ran.output,
            path.parent().unwrap_or(&path),
        ));
        let text = String::from_utf8_lossy(
            &std::fs::read(&path).with_context(|| format!("reading {shown}"))?,
        )
        .into_owned();
        let (problems, notes) = ignition_findings(&output, &text, &shown);
        if ran.success {
            return Ok(Outcome::Pass {
                notes: notes
                    .into_iter()
                    .chain(problems.iter().map(|p| p.message.clone()))
                    .collect(),
            });
        }
        let problems = if problems.is_empty() {
            vec![Problem::new("ignition-validate failed")
                .in_file(&shown)
                .with_detail(output)]
        } else {
            problems
        };
        Ok(Outcome::Fail {
            problems,
            notes: Vec::new(),
        })
    })
    .needs(&["ignition-validate"])
    .cached(root, vec![config], Vec::new())
}

/// ignition-validate's report as problems: `error at $.path, line L col C: message`
/// is located already; a config version it does not know is reported without a
/// place, so it is pinned to the config's `ignition.version`.
fn ignition_findings(output: &str, text: &str, shown: &str) -> (Vec<Problem>, Vec<String>) {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    for line in output.lines() {
        let located = ["error at ", "warning at "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (place, message) = rest.split_once(": ")?;
            let (_, position) = place.split_once(", line ")?;
            let (line_no, column) = position.split_once(" col ")?;
            Some((
                *prefix,
                line_no.parse::<usize>().ok()?,
                column.parse::<usize>().ok()?,
                message,
            ))
        });
        match located {
            Some((prefix, line_no, column, message)) => {
                let message = if prefix.starts_with("warning") {
                    format!("warning: {message}")
                } else {
                    message.to_owned()
                };
                let problem = Problem::new(message).in_file(shown);
                // Line 0 means "somewhere": the whole config did not parse.
                problems.push(if line_no > 0 {
                    problem.at(line_no, Some(column))
                } else {
                    problem
                });
            }
            None if line.contains("config version") => {
                let scan = json_text::scan(text);
                let position = scan.value_position(&[
                    json_text::Segment::Key("ignition".into()),
                    json_text::Segment::Key("version".into()),
                ]);
                let version = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.pointer("/ignition/version")?.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let message = format!(
                    "Ignition config version {version:?} is not one this ignition-validate accepts ({}); Flatcar takes spec 3.x, e.g. \"3.3.0\"",
                    line.trim()
                );
                let problem = Problem::new(message).in_file(shown);
                problems.push(match position {
                    Some(p) => problem.at(p.line, Some(p.column)),
                    None => problem,
                });
            }
            None if !line.trim().is_empty() => notes.push(line.to_owned()),
            None => {}
        }
    }
    (problems, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignition_versions_are_pinned_to_the_version_field() {
        let text = "{\n  \"ignition\": {\n    \"version\": \"9.9.9\"\n  }\n}\n";
        let (problems, _) = ignition_findings(
            "couldn't parse config: unsupported config version\n",
            text,
            "images/capi/packer/files/flatcar/bootstrap.ign",
        );
        assert_eq!(problems.len(), 1);
        assert_eq!((problems[0].line, problems[0].column), (Some(3), Some(16)));
        assert!(problems[0].message.contains("\"9.9.9\""));
    }

    #[test]
    fn ignition_errors_keep_their_location() {
        let (problems, notes) = ignition_findings(
            "error at $.storage.files.0.path, line 3 col 34: path not absolute\n",
            "",
            "x.ign",
        );
        assert_eq!(problems[0].line, Some(3));
        assert_eq!(problems[0].column, Some(34));
        assert_eq!(problems[0].message, "path not absolute");
        assert!(notes.is_empty());
    }
}
