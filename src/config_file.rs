//! Configuration files for the long-running commands: `pehra zookeeper --config FILE` and
//! `pehra broker --config FILE` read their settings from a TOML file's `[zookeeper]` or
//! `[broker]` table, and `pehra config check FILE` validates one.
//!
//! One definition of every setting: the command's clap arguments. A key is a flag's long
//! name without its dashes (`data-dir = "/var/lib/pehra/zookeeper"`), checked by that
//! flag's own value parser; the file's settings become arguments placed before those of
//! the command line, and the commands let a later argument override an earlier one, so a
//! flag given on the command line wins. Errors name the file and the line.

use anyhow::Result;
use clap::{ArgAction, Args, CommandFactory, Subcommand};
use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The commands a configuration file has a table for.
pub const SECTIONS: [&str; 2] = ["zookeeper", "broker"];

/// Arguments of `pehra config`.
#[derive(Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file: TOML syntax, only the tables [zookeeper] and
    /// [broker], only keys that are flags of that command, and every value as the flag
    /// would take it. Prints the first error as FILE:LINE: MESSAGE and exits 1.
    Check {
        /// The TOML file (see docs/pehra.toml.example).
        file: PathBuf,
    },
}

/// `pehra config check FILE`.
pub fn run(args: ConfigArgs) -> Result<ExitCode> {
    match args.command {
        ConfigCommand::Check { file } => {
            let settings = load(&file)?;
            let counts: Vec<String> = settings
                .iter()
                .map(|(section, args)| {
                    format!(
                        "[{section}] {} settings",
                        args.iter().filter(|a| a.starts_with("--")).count()
                    )
                })
                .collect();
            println!(
                "{}: ok ({})",
                file.display(),
                if counts.is_empty() {
                    "empty".to_string()
                } else {
                    counts.join(", ")
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The command line with the settings of `--config FILE` put in: for `pehra zookeeper`
/// and `pehra broker`, the file's table becomes arguments placed right after the
/// subcommand, before the command line's own (which override them). Other command
/// lines, and those asking for `--help`, come back unchanged.
pub fn expand_args(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(section) = args.get(1).and_then(|a| a.to_str()) else {
        return Ok(args);
    };
    if !SECTIONS.contains(&section) || args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(args);
    }
    let mut file = None;
    for (i, arg) in args.iter().enumerate().skip(2) {
        if arg == "--config" {
            file = args.get(i + 1).map(PathBuf::from);
        } else if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            file = Some(PathBuf::from(path));
        }
    }
    let Some(file) = file else {
        return Ok(args);
    };
    let settings = load(&file)?;
    let Some((_, from_file)) = settings.into_iter().find(|(name, _)| *name == section) else {
        anyhow::bail!(
            "{}: no [{section}] table: the settings of `pehra {section}` go there",
            file.display()
        );
    };
    let mut expanded = args[..2].to_vec();
    expanded.extend(from_file.into_iter().map(OsString::from));
    expanded.extend(args[2..].iter().cloned());
    Ok(expanded)
}

/// Reads and validates `file`; returns each table present with its settings as
/// command-line arguments.
pub fn load(file: &Path) -> Result<Vec<(&'static str, Vec<String>)>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read the configuration {}: {e}", file.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("{}:{}: {}", file.display(), e.line, e.message))
}

/// A configuration error at a line (1-based).
#[derive(Debug, PartialEq)]
pub struct ConfigError {
    /// The line the error is on.
    pub line: usize,
    /// What is wrong, on one line.
    pub message: String,
}

/// Validates a configuration's text; returns each table present with its settings as
/// command-line arguments.
pub fn parse(text: &str) -> Result<Vec<(&'static str, Vec<String>)>, ConfigError> {
    let at = |span: Range<usize>, message: String| ConfigError {
        line: text[..span.start.min(text.len())].matches('\n').count() + 1,
        message,
    };
    let root = DeTable::parse(text).map_err(|e| {
        let message = e
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_string();
        at(e.span().unwrap_or(0..0), format!("invalid TOML: {message}"))
    })?;
    let mut out = Vec::new();
    for (key, value) in in_file_order(root.get_ref()) {
        let Some(section) = SECTIONS
            .iter()
            .copied()
            .find(|s| *s == key.get_ref().as_ref())
        else {
            return Err(at(
                key.span(),
                format!(
                    "unknown key `{}`: settings go in a [zookeeper] or [broker] table",
                    key.get_ref()
                ),
            ));
        };
        let DeValue::Table(table) = value.get_ref() else {
            return Err(at(
                value.span(),
                format!("`{section}` must be a table: [{section}]"),
            ));
        };
        let command = command_of(section);
        let mut args = Vec::new();
        for (key, value) in in_file_order(table) {
            args.extend(
                setting_args(&command, key.get_ref(), value.get_ref())
                    .map_err(|message| at(key.span(), format!("[{section}] {message}")))?,
            );
        }
        out.push((section, args));
    }
    Ok(out)
}

/// The table's entries in the order of the file (the parser keeps them sorted by key).
fn in_file_order<'a, 'i>(
    table: &'a DeTable<'i>,
) -> Vec<(
    &'a Spanned<std::borrow::Cow<'i, str>>,
    &'a Spanned<DeValue<'i>>,
)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// The clap command of `pehra SECTION`, built (its arguments' actions resolved).
fn command_of(section: &str) -> clap::Command {
    let mut command = crate::Cli::command()
        .find_subcommand(section)
        .expect("a section is a subcommand")
        .clone();
    command.build();
    command
}

/// The arguments for `key = value`, each value checked by the flag's own parser.
fn setting_args(
    command: &clap::Command,
    key: &str,
    value: &DeValue,
) -> Result<Vec<String>, String> {
    let arg = command
        .get_arguments()
        .find(|a| a.get_long() == Some(key) && !["config", "help", "version"].contains(&key))
        .ok_or_else(|| {
            format!(
                "unknown key `{key}` (the keys are the flags of `pehra {} --help`, without their dashes)",
                command.get_name()
            )
        })?;
    let flag = format!("--{key}");
    if !arg.get_action().takes_values() {
        return match value {
            DeValue::Boolean(true) => Ok(vec![flag]),
            DeValue::Boolean(false) => Ok(vec![]),
            other => Err(format!(
                "`{key}` is a switch: true or false, not {}",
                other.type_str()
            )),
        };
    }
    let values: Vec<&DeValue> = match value {
        DeValue::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
            items.iter().map(|v| v.get_ref()).collect()
        }
        DeValue::Array(_) => return Err(format!("`{key}` takes one value, not an array")),
        single => vec![single],
    };
    let mut args = Vec::new();
    for value in values {
        let text = match value {
            DeValue::String(s) => s.to_string(),
            DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| format!("`{key}`: {i} is out of range"))?
                .to_string(),
            DeValue::Boolean(b) => b.to_string(),
            other => return Err(format!("`{key}` cannot be {}", other.type_str())),
        };
        check_value(arg, &flag, &text)?;
        // One argument `--flag=value`: a value that starts with '-' stays a value.
        args.push(format!("{flag}={text}"));
    }
    Ok(args)
}

/// Checks `text` with the flag's own value parser: a command of that one argument
/// (not required there) parses `--flag text`.
fn check_value(arg: &clap::Arg, flag: &str, text: &str) -> Result<(), String> {
    clap::Command::new("pehra")
        .no_binary_name(true)
        .arg(arg.clone().required(false))
        .try_get_matches_from([format!("{flag}={text}")])
        .map(drop)
        .map_err(|e| {
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid value");
            first.strip_prefix("error: ").unwrap_or(first).to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../docs/pehra.toml.example");

    #[test]
    fn the_documented_example_is_valid_and_names_every_setting() {
        let sections = parse(EXAMPLE).unwrap_or_else(|e| panic!("line {}: {}", e.line, e.message));
        assert_eq!(
            sections.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            ["zookeeper", "broker"]
        );
        // Every flag of both commands is in the example (set, or commented out with its
        // default), so a new flag cannot be left out of the documentation.
        for section in SECTIONS {
            let table = EXAMPLE
                .split(&format!("\n[{section}]\n"))
                .nth(1)
                .expect("the table")
                .split("\n[")
                .next()
                .unwrap();
            for arg in command_of(section).get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if ["config", "help", "version"].contains(&long) {
                    continue;
                }
                let set = table.lines().any(|l| {
                    let l = l.trim_start_matches(['#', ' ']);
                    l.starts_with(&format!("{long} =")) || l.starts_with(&format!("{long}="))
                });
                assert!(set, "docs/pehra.toml.example: [{section}] lacks `{long}`");
            }
        }
    }

    #[test]
    fn settings_become_flags_in_file_order() {
        let text = "[broker]\nid = 2\nlisten = \"127.0.0.1:5684\"\nstay-awake = true\n\
                    pehra-opt-out = false\nmaintenance-command = [\"a=true\", \"b=false\"]\n";
        let sections = parse(text).unwrap();
        assert_eq!(
            sections[0].1,
            [
                "--id=2",
                "--listen=127.0.0.1:5684",
                "--stay-awake",
                "--maintenance-command=a=true",
                "--maintenance-command=b=false"
            ]
        );
    }

    #[test]
    fn errors_name_the_line() {
        let error = |text: &str| {
            let e = parse(text).unwrap_err();
            format!("{}: {}", e.line, e.message)
        };
        assert_eq!(
            error("[zookeeper]\nlisten = \"127.0.0.1:2181\"\nlisten-port = 3\n"),
            "3: [zookeeper] unknown key `listen-port` (the keys are the flags of \
             `pehra zookeeper --help`, without their dashes)"
        );
        assert!(
            error("[broker]\n\nid = -1\n").starts_with("3: [broker] invalid value '-1' for '--id"),
            "{}",
            error("[broker]\n\nid = -1\n")
        );
        assert_eq!(
            error("listen = 1\n"),
            "1: unknown key `listen`: settings go in a [zookeeper] or [broker] table"
        );
        assert!(error("[broker]\nid = \n").starts_with("2: invalid TOML: "));
        assert_eq!(
            error("[broker]\nstay-awake = \"yes\"\n"),
            "2: [broker] `stay-awake` is a switch: true or false, not string"
        );
        assert_eq!(
            error("[zookeeper]\nlisten = [\"a\"]\n"),
            "2: [zookeeper] `listen` takes one value, not an array"
        );
        assert!(error("[zookeeper]\nconfig = \"x\"\n")
            .starts_with("2: [zookeeper] unknown key `config`"));
    }
}
