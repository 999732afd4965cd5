//! Asking the person at the terminal a yes/no question on stderr.

use std::io::{BufRead, Write};

use anyhow::Context;

/// Prints `question` and `[y/N]` on stderr and reads one answer line from stdin:
/// true only for "y", "Y" or "yes". The caller decides whether there is a terminal.
pub fn yes_or_no(question: &str) -> anyhow::Result<bool> {
    // A question that ends its own line gets the choices on the next one.
    let gap = if question.ends_with('\n') { "" } else { " " };
    eprint!("{question}{gap}[y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
