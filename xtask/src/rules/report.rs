//! Reading a rules run back from its output (Packer's log, vagrant's output): the
//! script's lines may come with any prefix (`qemu: `, `verify | `).

/// One rule's result as the script printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleResult {
    pub passed: bool,
    pub name: String,
    pub expected: String,
    pub found: String,
}

/// What a run printed: each rule, and the summary line if it got that far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Run {
    pub rules: Vec<RuleResult>,
    /// `node rules: N passed, M failed in T ms`.
    pub summary: Option<String>,
}

/// The rule lines and the summary in `output`. A failed rule is printed twice (as
/// it runs and in the closing list); it counts once.
pub fn parse(output: &str) -> Run {
    let mut run = Run::default();
    for line in output.lines() {
        if let Some(at) = line.find("node rules: ") {
            run.summary = Some(line[at..].trim_end().to_owned());
            continue;
        }
        let found = ["[PASS] ", "[FAIL] "]
            .iter()
            .find_map(|tag| Some((*tag, line.split_once(tag)?.1)));
        let Some((tag, rest)) = found else { continue };
        let Some((name, rest)) = rest.split_once(" | expected: ") else {
            continue;
        };
        let (expected, found) = rest.split_once(" | found: ").unwrap_or((rest, ""));
        let result = RuleResult {
            passed: tag == "[PASS] ",
            name: name.to_owned(),
            expected: expected.to_owned(),
            found: found.trim_end().to_owned(),
        };
        if !run.rules.contains(&result) {
            run.rules.push(result);
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_lines_are_read_and_repeats_count_once() {
        let output = "    qemu: [PASS] service containerd: running | expected: true | found: true (active)\n\
                      ==> qemu: [FAIL] kernel-param vm.overcommit_memory: value | expected: 1 | found: 0\n\
                      ==> qemu: node rules: 1 passed, 1 failed in 812 ms\n\
                      ==> qemu: node rules that failed:\n\
                      ==> qemu: [FAIL] kernel-param vm.overcommit_memory: value | expected: 1 | found: 0\n";
        let run = parse(output);
        assert_eq!(run.rules.len(), 2);
        assert!(run.rules[0].passed);
        assert_eq!(
            run.rules[1].name,
            "kernel-param vm.overcommit_memory: value"
        );
        assert_eq!(run.rules[1].found, "0");
        assert_eq!(
            run.summary.as_deref(),
            Some("node rules: 1 passed, 1 failed in 812 ms")
        );
    }
}
