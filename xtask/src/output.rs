//! How a command reports: `--format text` for people, `--format json` for machines.
//! One flag, one enum, for every command that prints a result.

/// The `--format` every command that prints a result takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: tables and sentences.
    #[default]
    Text,
    /// For machines: one JSON document on stdout, with a stable shape.
    Json,
}
