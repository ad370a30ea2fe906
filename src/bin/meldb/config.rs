//! `meldb relay --config FILE`: a TOML file of `meldb relay`'s flags,
//! turned into arguments that clap parses before the command line's.
//!
//! Invariant: the file says nothing the command line could not. Each key
//! is a long flag of `meldb relay` (`max_connections` or
//! `max-connections`), each value what that flag takes: a string, an
//! integer, a float or a boolean (`true` gives a switch, `false` leaves it
//! out), or an array for a flag that repeats (`listen = ["tls://...",
//! "ws://..."]`). Clap validates them as it validates typed flags, so
//! every flag is a key, and nothing here lists them. A flag given on the
//! command line replaces the file's value for it (a repeated flag's whole
//! list). A relative path in the file (any flag whose value is a path, as
//! clap knows from its type) is resolved against the file's directory.
//! An unknown key, a value of the wrong shape or one clap refuses is an
//! error naming the file, the key and its line (exit status 2).

use crate::cli::Cli;
use clap::builder::ValueHint;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The command line, with `meldb relay --config FILE`'s file read in.
pub fn parse() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    let Some((at, file)) = relay_config(&args) else {
        return Cli::parse_from(args);
    };
    let from_file = match expand(&file, &given_flags(&args[at + 1..])) {
        Ok(from_file) => from_file,
        Err(message) => usage_error(ErrorKind::InvalidValue, message),
    };
    let mut all = args[..=at].to_vec();
    all.extend(from_file.args.iter().cloned());
    all.extend(args[at + 1..].iter().cloned());
    match Cli::try_parse_from(all) {
        Ok(cli) => cli,
        Err(e) => match from_file.blame(&e) {
            Some(message) => usage_error(e.kind(), message),
            None => e.exit(),
        },
    }
}

/// Where `relay` is in `args`, and its `--config FILE`, if it has one.
fn relay_config(args: &[OsString]) -> Option<(usize, PathBuf)> {
    // Only the global switch can come before the command.
    let at = args
        .iter()
        .skip(1)
        .position(|a| a != "-v" && a != "--verbose")?
        + 1;
    if args[at] != "relay" {
        return None;
    }
    let mut rest = args[at + 1..].iter();
    while let Some(arg) = rest.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == "--config" {
            return rest.next().map(|file| (at, PathBuf::from(file)));
        }
        if let Some(file) = text.strip_prefix("--config=") {
            return Some((at, PathBuf::from(file)));
        }
    }
    None
}

/// The long names of the flags on the command line after `relay`.
fn given_flags(args: &[OsString]) -> BTreeSet<String> {
    let mut command = Cli::command();
    command.build();
    let relay = command.find_subcommand("relay");
    let mut given = BTreeSet::new();
    for arg in args {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if let Some(long) = text.strip_prefix("--") {
            given.insert(long.split('=').next().unwrap_or(long).to_string());
        } else if let Some(shorts) = text.strip_prefix('-') {
            let longs = shorts.chars().filter_map(|c| {
                relay?
                    .get_arguments()
                    .find(|a| a.get_short() == Some(c))
                    .and_then(|a| a.get_long())
            });
            given.extend(longs.map(str::to_string));
        }
    }
    given
}

/// A config file's flags as arguments, and where each came from.
struct FromFile {
    file: PathBuf,
    args: Vec<OsString>,
    /// Each flag's key and line, by long name.
    keys: BTreeMap<String, (String, usize)>,
}

impl FromFile {
    /// An error of clap's about a flag the file gave, put as the file's.
    fn blame(&self, e: &clap::Error) -> Option<String> {
        let named = [ContextKind::InvalidArg, ContextKind::PriorArg]
            .into_iter()
            .filter_map(|kind| match e.get(kind) {
                Some(ContextValue::String(s)) => Some(s.clone()),
                Some(ContextValue::Strings(s)) => s.first().cloned(),
                _ => None,
            });
        for arg in named {
            let long = arg
                .trim_start_matches('-')
                .split([' ', '=', '<'])
                .next()
                .unwrap_or_default()
                .to_string();
            if let Some((key, line)) = self.keys.get(&long) {
                let rendered = e.render().to_string();
                let what = rendered
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                return Some(format!(
                    "{}, line {line}: key `{key}`: {what}",
                    self.file.display()
                ));
            }
        }
        None
    }
}

/// Reads `file` and turns it into `meldb relay` arguments, leaving out the
/// flags the command line gives (`given`).
fn expand(file: &Path, given: &BTreeSet<String>) -> Result<FromFile, String> {
    let shown = file.display();
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("config file {shown}: cannot read it: {e}"))?;
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(&text).map_err(|e| format!("config file {shown}: {e}"))?;
    let dir = file.parent().unwrap_or(Path::new(""));
    let mut command = Cli::command();
    command.build();
    let relay = command
        .find_subcommand("relay")
        .ok_or("this build has no `relay` command")?;
    let mut out = FromFile {
        file: file.to_owned(),
        args: Vec::new(),
        keys: BTreeMap::new(),
    };
    for (key, value) in &table {
        let line = line_of(&text, key.span().start);
        let at =
            |problem: String| format!("{shown}, line {line}: key `{}`: {problem}", key.get_ref());
        let long = key.get_ref().replace('_', "-");
        let arg = relay
            .get_arguments()
            .filter(|a| !matches!(a.get_long(), Some("config" | "help" | "version")))
            .find(|a| a.get_long() == Some(long.as_str()))
            .ok_or_else(|| {
                at("unknown key: the keys are `meldb relay`'s long flags (see `meldb relay --help`), \
                    e.g. listen, tokens, data_dir, max_connections"
                    .into())
            })?;
        if let Some(previous) = out.keys.get(&long) {
            return Err(at(format!("the same flag as key `{}`", previous.0)));
        }
        out.keys.insert(long.clone(), (key.get_ref().clone(), line));
        if given.contains(&long) {
            continue;
        }
        if !arg.get_action().takes_values() {
            match value.get_ref() {
                toml::Value::Boolean(true) => out.args.push(format!("--{long}").into()),
                toml::Value::Boolean(false) => {}
                _ => return Err(at("a switch: give true or false".into())),
            }
            continue;
        }
        let is_path = matches!(
            arg.get_value_hint(),
            ValueHint::AnyPath | ValueHint::FilePath | ValueHint::DirPath
        );
        let repeats = matches!(arg.get_action(), clap::ArgAction::Append);
        let values = match value.get_ref() {
            toml::Value::Array(items) if repeats => items.iter().collect(),
            toml::Value::Array(_) => {
                return Err(at("takes one value, not an array".into()));
            }
            one => vec![one],
        };
        for value in values {
            let text = scalar(value).ok_or_else(|| {
                at(if repeats {
                    "takes a string, a number or an array of them".into()
                } else {
                    "takes a string, a number or a boolean".into()
                })
            })?;
            // `--flag=value`, so a value starting with `-` stays a value.
            let mut arg = OsString::from(format!("--{long}="));
            if is_path && Path::new(&text).is_relative() {
                arg.push(dir.join(&text));
            } else {
                arg.push(text);
            }
            out.args.push(arg);
        }
    }
    Ok(out)
}

/// A value as the text a flag would be given.
fn scalar(value: &toml::Value) -> Option<String> {
    Some(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        _ => return None,
    })
}

/// The 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

/// A usage error of `meldb relay` (exit status 2).
fn usage_error(kind: ErrorKind, message: String) -> ! {
    let mut command = Cli::command();
    command.build();
    match command.find_subcommand_mut("relay") {
        Some(relay) => relay.error(kind, message).exit(),
        None => command.error(kind, message).exit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(text: &str, given: &[&str]) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let file = dir.path().join("relay.toml");
        std::fs::write(&file, text).map_err(|e| e.to_string())?;
        let given = given.iter().map(|s| s.to_string()).collect();
        let out = expand(&file, &given)?;
        let shown = dir.path().to_string_lossy().into_owned();
        Ok(out
            .args
            .iter()
            .map(|a| a.to_string_lossy().replace(&shown, "DIR"))
            .collect())
    }

    #[test]
    fn keys_are_flags_and_arrays_repeat_them() -> Result<(), String> {
        let args = expanded(
            "listen = [\"tcp://127.0.0.1:0\", \"ws://127.0.0.1:0/sync\"]\n\
             max_connections = 10\nhandshake-timeout = \"2s\"\ntokens = \"tokens.toml\"\n\
             tls_cert = \"/etc/meldb/cert.pem\"\n",
            &[],
        )?;
        assert_eq!(
            args,
            [
                "--handshake-timeout=2s",
                "--listen=tcp://127.0.0.1:0",
                "--listen=ws://127.0.0.1:0/sync",
                "--max-connections=10",
                "--tls-cert=/etc/meldb/cert.pem",
                "--tokens=DIR/tokens.toml",
            ]
        );
        Ok(())
    }

    #[test]
    fn the_command_line_replaces_a_files_flag() -> Result<(), String> {
        let args = expanded(
            "listen = [\"a:1\", \"b:2\"]\nmax_connections = 10\n",
            &["listen"],
        )?;
        assert_eq!(args, ["--max-connections=10"]);
        Ok(())
    }

    #[test]
    fn bad_keys_and_values_name_the_file_key_and_line() {
        for (text, needle) in [
            (
                "listen = \"a:1\"\nmax_conections = 3\n",
                "line 2: key `max_conections`: unknown key",
            ),
            (
                "max_connections = [1, 2]\n",
                "line 1: key `max_connections`: takes one value",
            ),
            ("listen = [[\"a\"]]\n", "key `listen`: takes a string"),
            ("config = \"other.toml\"\n", "key `config`: unknown key"),
            (
                "max_connections = 1\nmax-connections = 2\n",
                "the same flag",
            ),
            ("listen = \n", "relay.toml"),
        ] {
            match expanded(text, &[]) {
                Ok(args) => panic!("{text:?} accepted: {args:?}"),
                Err(message) => assert!(
                    message.contains(needle) && message.contains("relay.toml"),
                    "{text:?}: {message}"
                ),
            }
        }
    }
}
