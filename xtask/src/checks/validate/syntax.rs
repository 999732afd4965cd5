//! The checks that read the image definitions' files as text: every JSON file
//! parses (and has no key twice in one object), every YAML file parses.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::checks::engine::{Check, Outcome, Problem};
use crate::checks::source_tree::CAPI;
use crate::json_text;
use crate::rules;

pub fn yaml_check(root: &Path, files: Vec<PathBuf>) -> Check {
    let label = format!("{} files", files.len());
    let body_root = root.to_path_buf();
    let body_files = files.clone();
    Check::new("yaml", label, move |_, _| {
        let mut problems = Vec::new();
        for file in &body_files {
            let shown = file.display().to_string();
            let text = std::fs::read_to_string(body_root.join(file))
                .with_context(|| format!("reading {shown}"))?;
            if let Err(e) = rules::yaml::check_syntax(&text) {
                problems.push(
                    Problem::new(format!("YAML syntax error: {}", e.message))
                        .in_file(&shown)
                        .at(e.at.line, Some(e.at.column)),
                );
            }
        }
        Ok(Outcome::from_problems(problems, Vec::new()))
    })
    .cached(root, files, Vec::new())
}

pub fn json_check(root: &Path, files: Vec<PathBuf>, whole_tree: bool) -> Check {
    let label = if whole_tree {
        format!("{CAPI} ({} files)", files.len())
    } else if files.len() == 1 {
        files[0].display().to_string()
    } else {
        format!("{} files", files.len())
    };
    let body_root = root.to_path_buf();
    let body_files = files.clone();
    Check::new("json", label, move |_, _| {
        let mut problems = Vec::new();
        for file in &body_files {
            let shown = file.display().to_string();
            let bytes =
                std::fs::read(body_root.join(file)).with_context(|| format!("reading {shown}"))?;
            let Ok(text) = String::from_utf8(bytes) else {
                problems.push(Problem::new("not UTF-8 text, so not JSON").in_file(&shown));
                continue;
            };
            match json_text::parse(&text) {
                Ok(_) => {
                    for duplicate in json_text::scan(&text).duplicate_keys {
                        problems.push(
                            Problem::new(format!(
                                "`{}` appears twice in the same object (first on line {}); only the last one counts",
                                duplicate.key, duplicate.first.line
                            ))
                            .in_file(&shown)
                            .at(duplicate.position.line, Some(duplicate.position.column)),
                        );
                    }
                }
                Err(err) => problems.push(
                    Problem::new(err.message)
                        .in_file(&shown)
                        .at(err.position.line, Some(err.position.column))
                        .with_detail(err.excerpt),
                ),
            }
        }
        Ok(Outcome::from_problems(problems, Vec::new()))
    })
    .cached(root, files, Vec::new())
}
