//! Helpers for the transport tests: a CA and the certificates it signs,
//! made with rcgen in the test; the transports to run over; the `meldb`
//! binary as a server process that prints one `listening on URL` line per
//! listener.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub type Error = Box<dyn std::error::Error>;

/// A CA, and a server certificate it signed, as PEM files in a directory.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A fresh CA and a certificate for `names` (host names or IP
    /// addresses), written as `<prefix>-ca.pem`, `<prefix>-cert.pem` and
    /// `<prefix>-key.pem` in `dir`.
    pub fn new(dir: &Path, prefix: &str, names: &[&str]) -> Result<Pki, Error> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("meldb test CA {prefix}"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate()?;
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "meldb test relay");
        let cert = params.signed_by(&key, &issuer)?;
        let pki = Pki {
            ca: dir.join(format!("{prefix}-ca.pem")),
            cert: dir.join(format!("{prefix}-cert.pem")),
            key: dir.join(format!("{prefix}-key.pem")),
        };
        std::fs::write(&pki.ca, ca_cert.pem())?;
        std::fs::write(&pki.cert, cert.pem())?;
        std::fs::write(&pki.key, key.serialize_pem())?;
        Ok(pki)
    }
}

/// One transport to run a scenario over.
#[derive(Clone, Copy, Debug)]
pub struct Transport {
    pub scheme: &'static str,
}

impl Transport {
    pub fn is_websocket(self) -> bool {
        matches!(self.scheme, "ws" | "wss")
    }

    pub fn is_tls(self) -> bool {
        matches!(self.scheme, "tls" | "wss")
    }

    /// Where a server on 127.0.0.1 listens (any free port).
    pub fn listen(self) -> String {
        match self.scheme {
            "ws" | "wss" => format!("{}://127.0.0.1:0/sync", self.scheme),
            s => format!("{s}://127.0.0.1:0"),
        }
    }

    /// The server flags for this transport: `--listen` and, for TLS, the
    /// certificate and key.
    pub fn server_args(self, pki: &Pki) -> Vec<String> {
        let mut args = vec!["--listen".to_string(), self.listen()];
        if self.is_tls() {
            args.extend([
                "--tls-cert".to_string(),
                pki.cert.display().to_string(),
                "--tls-key".to_string(),
                pki.key.display().to_string(),
            ]);
        }
        args
    }

    /// The client flags a `meldb sync` over this transport needs
    /// (`--ca` for TLS).
    pub fn client_args(self, pki: &Pki) -> Vec<String> {
        if self.is_tls() {
            vec!["--ca".to_string(), pki.ca.display().to_string()]
        } else {
            Vec::new()
        }
    }
}

/// TCP and TLS always; WebSocket and WebSocket over TLS too with
/// `MELDB_FULL_TRANSPORTS=1` (they have tests of their own in every run).
pub fn transports() -> Vec<Transport> {
    let mut all = vec![Transport { scheme: "tcp" }, Transport { scheme: "tls" }];
    if std::env::var("MELDB_FULL_TRANSPORTS").is_ok_and(|v| v == "1") {
        all.extend([Transport { scheme: "ws" }, Transport { scheme: "wss" }]);
    }
    all
}

pub fn schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/inventory.toml")
}

/// The `meldb` binary with the inventory schema and quiet logs.
pub fn meldb() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meldb"));
    cmd.env("MELDB_SCHEMA", schema_path())
        .env_remove("MELDB_LOG");
    cmd
}

/// Runs `meldb` in `dir`; its stdout, or an error with its stderr.
pub fn cli(dir: &Path, args: &[String]) -> Result<String, Error> {
    let out = meldb().current_dir(dir).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "meldb {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Runs `meldb` in `dir`, expecting it to fail: its stderr.
pub fn cli_fails(dir: &Path, args: &[String]) -> Result<String, Error> {
    let out = meldb().current_dir(dir).args(args).output()?;
    if out.status.success() {
        return Err(format!(
            "meldb {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        )
        .into());
    }
    Ok(String::from_utf8(out.stderr)?)
}

pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A `meldb relay` or `meldb serve` process, killed when dropped.
pub struct Server {
    pub child: Child,
    /// What each `listening on` line said, in `--listen` order.
    pub urls: Vec<String>,
}

impl Server {
    /// Starts `cmd` and reads one `listening on` line per listener.
    pub fn start(mut cmd: Command, listeners: usize) -> Result<Server, Error> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut urls = Vec::new();
        for _ in 0..listeners {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let url = line
                .trim()
                .strip_prefix("listening on ")
                .ok_or_else(|| format!("unexpected line {line:?}"))?;
            urls.push(url.to_string());
        }
        Ok(Server { child, urls })
    }

    pub fn url(&self) -> &str {
        &self.urls[0]
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const TOKENS: &str = r#"
[[token]]
name = "till-1"
token = "rw-token-1"
access = "read-write"
[[token]]
name = "till-2"
token = "rw-token-2"
access = "read-write"
[[token]]
name = "till-3"
token = "rw-token-3"
access = "read-write"
[[token]]
name = "dashboard"
token = "ro-token-1"
access = "read-only"
"#;

/// `meldb relay` in `dir` (database `relay.db`, the tokens above) with
/// these listener arguments.
pub fn relay(dir: &Path, listen_args: &[String], listeners: usize) -> Result<Server, Error> {
    let tokens = dir.join("tokens.toml");
    std::fs::write(&tokens, TOKENS)?;
    let mut cmd = meldb();
    cmd.current_dir(dir)
        .args(["relay", "--db", "relay.db", "--max-message", "1048576"])
        .arg("--tokens")
        .arg(tokens)
        .args(listen_args);
    Server::start(cmd, listeners)
}
