//! What the checks make of other programs' output: running a tool to completion
//! and keeping what it said (without colour codes), file names made relative to the
//! checked tree, runs of blank lines tidied away, and the `path:line[:column]:
//! message` lines that shellcheck, yamllint, ansible-lint and clippy print, as
//! problems.

use std::path::Path;

use super::engine::Problem;
use crate::ansi;

/// A tool's output with the checked tree's absolute path taken out, so messages
/// name files the way the report does (relative to the root).
pub fn relative_output(text: &str, root: &Path) -> String {
    let prefix = format!("{}/", root.display());
    text.replace(&prefix, "")
}

/// How an external command ended: success and its stdout followed by its stderr.
pub struct Ran {
    pub success: bool,
    pub output: String,
}

/// Runs `cmd` to completion, capturing its output; a non-zero exit is a result, not
/// an error. Only failing to start it is an error.
pub fn capture(cmd: xshell::Cmd<'_>) -> anyhow::Result<Ran> {
    let output = cmd.ignore_status().quiet().output()?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !text.is_empty() && !text.ends_with('\n') && !stderr.is_empty() {
        text.push('\n');
    }
    text.push_str(&stderr);
    Ok(Ran {
        success: output.status.success(),
        output: ansi::strip(&text),
    })
}

/// The `path:line:column: message` lines of a tool's output (shellcheck's `gcc`
/// format, yamllint's `parsable` format, ansible-lint's `pep8` format) as problems;
/// the lines that are not in that form are returned apart.
pub fn parse_located_lines(output: &str) -> (Vec<Problem>, Vec<String>) {
    let mut problems = Vec::new();
    let mut other = Vec::new();
    for line in output.lines() {
        match parse_located_line(line) {
            Some(problem) => problems.push(problem),
            None if !line.trim().is_empty() => other.push(line.to_owned()),
            None => {}
        }
    }
    (problems, other)
}

fn parse_located_line(line: &str) -> Option<Problem> {
    let mut parts = line.splitn(4, ':');
    let file = parts.next()?;
    let line_no: usize = parts.next()?.trim().parse().ok()?;
    let third = parts.next()?;
    let (column, message) = match third.trim().parse::<usize>() {
        Ok(column) => (Some(column), parts.next()?.trim()),
        // `path:line: message` (no column).
        Err(_) => (None, line.splitn(3, ':').nth(2)?.trim()),
    };
    if file.is_empty() || file.contains(' ') {
        return None;
    }
    Some(Problem::new(message).in_file(file).at(line_no, column))
}

/// A tool's output without trailing blanks and runs of empty lines.
pub fn tidy_output(text: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() && out.last().is_none_or(|l| l.is_empty()) {
            continue;
        }
        out.push(line);
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn located_lines_become_problems() {
        let (problems, other) = parse_located_lines(
            "hack/x.sh:3:8: warning: Quote this to prevent word splitting. [SC2086]\n\
             ansible/node.yml:4:1: [error] syntax error: expected <block end> (syntax)\n\
             ansible/roles/a/tasks/main.yml:7: fqcn[action-core]: Use FQCN\n\
             something else\n",
        );
        assert_eq!(problems.len(), 3);
        assert_eq!(
            problems[0],
            Problem::new("warning: Quote this to prevent word splitting. [SC2086]")
                .in_file("hack/x.sh")
                .at(3, Some(8))
        );
        assert_eq!(problems[2].line, Some(7));
        assert_eq!(problems[2].column, None);
        assert_eq!(problems[2].message, "fqcn[action-core]: Use FQCN");
        assert_eq!(other, vec!["something else"]);
    }

    #[test]
    fn tidy_output_drops_blank_runs() {
        assert_eq!(
            tidy_output("\nError: x\n\n\n\nmore  \n\n"),
            "Error: x\n\nmore"
        );
    }
}
