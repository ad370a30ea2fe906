//! `meldb token add` and `remove`: a client in or out of a relay's tokens
//! file; a new one gets a random secret of which the file keeps only the
//! hash.
//!
//! The file is changed all at once or not at all: the new text is checked
//! as a whole (the relay's own parser) and written to a temporary file in
//! the same directory, then renamed over the old one. The secret is
//! printed once and never written anywhere.

use crate::cli::{TokenAddArgs, TokenRemoveArgs};
use crate::error::{file_error, CliError, Result};
use meldb::sync::Tokens;
use std::io::Write;
use std::path::Path;

/// `meldb token add`.
pub fn add(args: &TokenAddArgs, out: &mut dyn Write) -> Result<()> {
    let path = &args.tokens;
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(file_error(path)(e)),
    };
    let secret = new_secret();
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut entry = format!(
        "\n[[token]]\nname = {}\ntoken_hash = {}\naccess = {}\n",
        quote(&args.name),
        quote(&Tokens::hash_line(&secret)),
        quote(&args.access),
    );
    match args.namespaces.as_slice() {
        [] => {}
        [one] => entry.push_str(&format!("namespace = {}\n", quote(one))),
        several => {
            let names: Vec<String> = several.iter().map(|n| quote(n)).collect();
            entry.push_str(&format!("namespaces = [{}]\n", names.join(", ")));
        }
    }
    if let Some(user) = &args.user {
        entry.push_str(&format!("user = {}\n", quote(user)));
    }
    if !args.roles.is_empty() {
        let roles: Vec<String> = args.roles.iter().map(|r| quote(r)).collect();
        entry.push_str(&format!("roles = [{}]\n", roles.join(", ")));
    }
    let text = format!("{}{entry}", existing.as_deref().unwrap_or_default());
    // Refuses what the relay would refuse (a name twice, a bad namespace),
    // before anything is written.
    Tokens::from_toml_str(&text, &path.display().to_string())?;
    replace(path, &text, existing.is_none())?;
    writeln!(out, "{secret}")?;
    out.flush()?;
    Ok(())
}

/// `meldb token remove`: the file without `args.name`'s `[[token]]` table,
/// the rest byte for byte.
pub fn remove(args: &TokenRemoveArgs, out: &mut dyn Write) -> Result<()> {
    let path = &args.tokens;
    let text = std::fs::read_to_string(path).map_err(file_error(path))?;
    let origin = path.display().to_string();
    let before = Tokens::from_toml_str(&text, &origin)?;
    let mut kept = String::with_capacity(text.len());
    let mut removed = 0;
    for table in tables(&text) {
        if table_name(table).as_deref() == Some(args.name.as_str()) {
            removed += 1;
        } else {
            kept.push_str(table);
        }
    }
    let after = Tokens::from_toml_str(&kept, &origin)?;
    if removed != 1 || after.len() + 1 != before.len() {
        return Err(CliError::NoSuchToken {
            name: args.name.clone(),
            file: path.clone(),
        });
    }
    replace(path, &kept, false)?;
    writeln!(out, "removed {:?} from {}", args.name, path.display())?;
    Ok(())
}

/// The file cut before each line that opens a table (`[[token]]`, or any
/// `[...]`), and before the comments and blank lines right above it
/// (they are the table's): the text before the first, then one piece per
/// table.
fn tables(text: &str) -> Vec<&str> {
    let mut cuts = vec![0];
    let mut at = 0;
    // Where the comments and blank lines just above this line began.
    let mut above: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            let cut = above.unwrap_or(at);
            if cut > 0 {
                cuts.push(cut);
            }
            above = None;
        } else if trimmed.is_empty() || trimmed.starts_with('#') {
            above.get_or_insert(at);
        } else {
            above = None;
        }
        at += line.len();
    }
    cuts.push(text.len());
    cuts.dedup();
    cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

/// The `name` of the `[[token]]` table in a piece's text, if it holds one
/// and parses.
fn table_name(table: &str) -> Option<String> {
    let parsed: toml::Table = toml::from_str(table).ok()?;
    let entry = parsed.get("token")?.as_array()?.first()?;
    entry.get("name")?.as_str().map(str::to_owned)
}

/// 244 random bits (two v4 UUIDs), as 64 hex digits.
fn new_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Writes `text` to `path` through a temporary file beside it and a
/// rename; a new file is readable by its owner only, an existing one keeps
/// its permissions.
fn replace(path: &Path, text: &str, new: bool) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tokens".into());
    let temp = dir.join(format!(".{name}.meldb-new"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temp).map_err(file_error(&temp))?;
    file.write_all(text.as_bytes()).map_err(file_error(&temp))?;
    file.sync_all().map_err(file_error(&temp))?;
    if !new {
        let permissions = std::fs::metadata(path)
            .map_err(file_error(path))?
            .permissions();
        std::fs::set_permissions(&temp, permissions).map_err(file_error(&temp))?;
    }
    std::fs::rename(&temp, path).map_err(file_error(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{table_name, tables};

    #[test]
    fn a_file_cuts_into_tables_with_the_comments_above_them() {
        let text = "# clients\n\n[[token]]\nname = \"a\"\nroles = [\n  \"x\",\n]\n\n\
                    # the office\n[[token]]\nname = \"b\"\n";
        let pieces = tables(text);
        assert_eq!(pieces.concat(), text);
        assert_eq!(
            pieces,
            [
                "# clients\n\n[[token]]\nname = \"a\"\nroles = [\n  \"x\",\n]\n",
                "\n# the office\n[[token]]\nname = \"b\"\n",
            ]
        );
        assert_eq!(table_name(pieces[0]).as_deref(), Some("a"));
        assert_eq!(table_name(pieces[1]).as_deref(), Some("b"));
    }
}
