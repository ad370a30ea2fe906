//! `meldb token add`: a new client in a relay's tokens file, with a random
//! secret of which the file keeps only the hash.
//!
//! The file is changed all at once or not at all: the new text is checked
//! as a whole (the relay's own parser) and written to a temporary file in
//! the same directory, then renamed over the old one. The secret is
//! printed once and never written anywhere.

use crate::cli::TokenAddArgs;
use crate::error::{file_error, Result};
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
    if let Some(namespace) = &args.namespace {
        entry.push_str(&format!("namespace = {}\n", quote(namespace)));
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
