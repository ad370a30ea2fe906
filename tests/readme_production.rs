//! README's "Run a relay in production" section, run as written.
//!
//! The section's fenced blocks are the test's input:
//!
//! - a block whose info string names a file (```` ```toml file=/etc/meldb/relay.toml ````)
//!   is written to that file;
//! - the ```` ```sh ```` blocks are one bash script, run in order with
//!   `set -euo pipefail`.
//!
//! The machine is faked only where a test cannot be root: the section's
//! directories (`/etc/meldb`, `/var/lib/meldb`, ... : `PLACES`) live under
//! a temporary root;
//! `relay.example` is `localhost`; the ports the section uses are free
//! ports of this machine; `/usr/local/bin/meldb` is the binary under
//! test. `sudo` runs its command. `systemctl` runs the unit file's own
//! lines: `enable --now` starts `ExecStart` (after `ExecStartPre`) in the
//! background and waits for its `listening on` line, `reload` runs
//! `ExecReload` with `$MAINPID`, `stop` sends SIGTERM and waits, `status`
//! says whether it runs; `journalctl -u` prints its stderr. The section's
//! certificate files are made by the test (a CA and a certificate for
//! `localhost`, as an ACME client or a company CA would provide them).
//! `curl`, when the machine has none, is a small Python stand-in for
//! `curl -fsS URL`.

mod tls_kit;

use std::path::{Path, PathBuf};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const SECTION: &str = "## Run a relay in production";

/// The section's text, from its heading to the next `## ` heading.
fn section(readme: &str) -> Res<&str> {
    let start = readme
        .find(SECTION)
        .ok_or("no production section in README.md")?;
    let rest = &readme[start + SECTION.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    Ok(&rest[..end])
}

/// A fenced block: its info string and its text.
struct Block {
    info: String,
    text: String,
}

fn blocks(section: &str) -> Res<Vec<Block>> {
    let mut out = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut text = String::new();
        loop {
            let line = lines.next().ok_or("an unclosed code block")?;
            if line == "```" {
                break;
            }
            text.push_str(line);
            text.push('\n');
        }
        out.push(Block {
            info: info.trim().to_owned(),
            text,
        });
    }
    Ok(out)
}

/// The file a block's info string names (`file=PATH`), if any.
fn file_of(info: &str) -> Option<&str> {
    info.split_whitespace()
        .find_map(|w| w.strip_prefix("file="))
}

/// A port nothing listens on right now.
fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The directories the section may use, kept under the test's root.
const PLACES: [&str; 5] = [
    "/etc/meldb",
    "/etc/systemd/system",
    "/var/lib/meldb",
    "/var/backups/meldb",
    "/var/log/meldb",
];

/// The section's text with the machine's places replaced by the test's.
struct Machine {
    root: PathBuf,
    ports: Vec<(String, String)>,
}

impl Machine {
    fn place(&self, text: &str) -> String {
        let mut text = text.replace("/usr/local/bin/meldb", env!("CARGO_BIN_EXE_meldb"));
        for dir in PLACES {
            text = text.replace(dir, &self.path(dir).display().to_string());
        }
        text = text.replace("relay.example", "localhost");
        for (from, to) in &self.ports {
            text = text.replace(from.as_str(), to.as_str());
        }
        text
    }

    fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }
}

/// The fakes of what a test cannot do as root (see the module doc).
const PRELUDE: &str = r#"
set -euo pipefail
sudo() { "$@"; }
unit_line() { sed -n "s/^$1=//p" "$UNIT_FILE" | head -n 1; }
systemctl() {
  case "$1" in
    daemon-reload) ;;
    enable)
      [ "$2" = "--now" ] || { echo "systemctl fake: only enable --now" >&2; return 1; }
      local pre; pre="$(unit_line ExecStartPre)"
      if [ -n "$pre" ]; then eval "$pre"; fi
      # exec: the background job becomes the relay, so $! is its pid.
      eval "exec $(unit_line ExecStart)" > "$ROOT/relay.out" 2> "$ROOT/relay.err" &
      echo $! > "$ROOT/relay.pid"
      for _ in $(seq 1 600); do
        grep -q "listening on" "$ROOT/relay.out" 2>/dev/null && return 0
        kill -0 "$(cat "$ROOT/relay.pid")" 2>/dev/null || { cat "$ROOT/relay.err" >&2; return 1; }
        sleep 0.1
      done
      echo "systemctl fake: the relay did not start" >&2; return 1 ;;
    reload)
      MAINPID="$(cat "$ROOT/relay.pid")" eval "$(unit_line ExecReload)"
      sleep 1 ;;
    stop)
      local pid; pid="$(cat "$ROOT/relay.pid")"
      kill -TERM "$pid"
      for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
      echo "systemctl fake: the relay did not stop" >&2; return 1 ;;
    status)
      kill -0 "$(cat "$ROOT/relay.pid")" 2>/dev/null && echo "active (running)" ;;
    *) echo "systemctl fake: $1 is not faked" >&2; return 1 ;;
  esac
}
journalctl() { cat "$ROOT/relay.err"; }
if ! command -v curl > /dev/null; then
  curl() {
    local url="${@: -1}"
    python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' "$url"
  }
fi
"#;

#[test]
fn the_production_section_runs_as_written() -> Res {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))?;
    let blocks = blocks(section(&readme)?)?;
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work)?;
    // The section copies the schema from a checkout.
    std::fs::create_dir_all(work.join("schema"))?;
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/inventory.toml"),
        work.join("schema/inventory.toml"),
    )?;
    let machine = Machine {
        root: root.clone(),
        ports: vec![
            (":7443".into(), format!(":{}", free_port()?)),
            (":7444".into(), format!(":{}", free_port()?)),
            (":9464".into(), format!(":{}", free_port()?)),
        ],
    };

    // The certificate the section says to put in place.
    let etc = machine.path("/etc/meldb");
    std::fs::create_dir_all(&etc)?;
    let pki = tls_kit::Pki::new(&etc, "relay", &["localhost", "127.0.0.1"])?;
    std::fs::rename(&pki.cert, etc.join("relay.pem"))?;
    std::fs::rename(&pki.key, etc.join("relay-key.pem"))?;
    std::fs::rename(&pki.ca, etc.join("ca.pem"))?;

    let mut script = String::from(PRELUDE);
    let mut unit = None;
    let mut ran = 0;
    for block in &blocks {
        if let Some(file) = file_of(&block.info) {
            let path = machine.path(file);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, machine.place(&block.text))?;
            if file.ends_with(".service") {
                unit = Some(path);
            }
        } else if block.info == "sh" {
            script.push_str(&machine.place(&block.text));
            ran += 1;
        }
    }
    let unit = unit.ok_or("no systemd unit (```ini file=....service) in the section")?;
    assert!(ran >= 2, "only {ran} shell blocks in the section");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_meldb"))
        .parent()
        .ok_or("the binary's directory")?
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .env("PATH", path)
        .env("ROOT", &root)
        .env("UNIT_FILE", &unit)
        .env_remove("MELDB_LOG")
        .output()?;
    // The script's relay, if it is still running, is stopped here.
    if let Ok(pid) = std::fs::read_to_string(root.join("relay.pid")) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.trim())
            .stderr(std::process::Stdio::null())
            .status();
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let relay_log = std::fs::read_to_string(root.join("relay.err")).unwrap_or_default();
    assert!(
        output.status.success(),
        "the section's commands failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- relay stderr\n{relay_log}"
    );
    // What the section says happened, happened: the device's row reached
    // the namespace, the reload took the tokens file without the removed
    // token, the backup holds the row, and the relay stopped cleanly.
    assert!(
        stdout.contains("meldb_relay_rows_received_total 1"),
        "{stdout}"
    );
    assert!(relay_log.contains("\"tokens reloaded\""), "{relay_log}");
    assert!(
        relay_log.contains("\"tokens\":1"),
        "one token left: {relay_log}"
    );
    let backup = machine.path("/var/backups/meldb/shop-7.db");
    let schema = meldb::Schema::load(work.join("schema/inventory.toml"))?;
    let restored = meldb::Store::open(&backup, &schema)?;
    let skus: Vec<String> = restored
        .conn()
        .prepare("SELECT sku FROM item")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    assert_eq!(skus, ["BEAN-1kg"]);
    assert!(
        std::fs::read_to_string(root.join("relay.pid"))
            .ok()
            .and_then(|pid| std::process::Command::new("kill")
                .args(["-0", pid.trim()])
                .stderr(std::process::Stdio::null())
                .status()
                .ok())
            .is_some_and(|s| !s.success()),
        "the relay still runs after systemctl stop"
    );
    Ok(())
}
