//! `meldb bench-relay` at its smoke size (what CI runs): clients writing
//! concurrently on shared rows through an in-process relay, and through a
//! `meldb relay` process given by `--url`, with idle connections beside
//! them. Checked: the run ends, every write arrived at every other client,
//! the convergence report says the digests, counter sums and set
//! contents agree, and the exit status is 0. The same with `--light`
//! clients (a pusher and a listener each, no replica receiving), whose
//! convergence is a fresh replica synced from the relay. No figure is
//! judged: the bench reports speed, the test only correctness.

mod common;

use common::{Listening, TestResult};
use std::process::{Command, Output};

fn meldb(args: &[&str]) -> Result<Output, std::io::Error> {
    Command::new(env!("CARGO_BIN_EXE_meldb"))
        .args(args)
        .output()
}

/// The report's convergence line says ok, and everything arrived.
fn check_report(output: &Output) -> TestResult {
    let text = String::from_utf8_lossy(&output.stdout);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\n{text}\n{errors}",
        output.status
    );
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
            .ok_or(format!("no {prefix:?} line in\n{text}"))
    };
    let convergence = line("convergence:")?;
    assert!(convergence.starts_with("convergence: ok"), "{text}");
    assert!(convergence.contains(" 0 still behind"), "{text}");
    assert!(convergence.contains(" 1 distinct digests"), "{text}");
    assert!(line("arrived:")?.contains(" 0 not arrived"), "{text}");
    assert!(line("writes:")?.contains(" of 60 planned"), "{text}");
    Ok(())
}

const SMOKE: &[&str] = &[
    "bench-relay",
    "--clients",
    "6",
    "--rate",
    "30",
    "--duration",
    "2s",
    "--deadline",
    "60s",
    "--keys",
    "4",
    "--idle",
    "8",
];

#[test]
fn smoke_size_converges_through_an_in_process_relay() -> TestResult {
    let output = meldb(SMOKE)?;
    check_report(&output)?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("idle: 8 of 8 connections authenticated"),
        "{text}"
    );
    assert!(text.contains("relay bytes:"), "{text}");
    Ok(())
}

/// A light run's report: every write arrived at every other client's
/// listener, and a fresh replica synced from the relay agrees with it.
fn check_light_report(output: &Output) -> TestResult {
    check_report(output)?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("setup: 6 of 6 light clients connected"),
        "{text}"
    );
    assert!(text.contains("a fresh one synced from the relay"), "{text}");
    assert!(text.contains("arrived: 300 of 300 deliveries"), "{text}");
    Ok(())
}

#[test]
fn light_clients_converge_through_an_in_process_relay() -> TestResult {
    let mut args = SMOKE.to_vec();
    args.push("--light");
    let output = meldb(&args)?;
    check_light_report(&output)?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("2 replicas"), "{text}");
    Ok(())
}

#[test]
fn smoke_size_converges_through_a_relay_process() -> TestResult {
    let dir = tempfile::tempdir()?;
    let schema = dir.path().join("bench.toml");
    let printed = meldb(&["bench-relay", "--print-schema"])?;
    assert!(printed.status.success());
    std::fs::write(&schema, &printed.stdout)?;
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\nname = \"bench\"\ntoken = \"bench-token\"\naccess = \"read-write\"\nmax_sites = 64\n",
    )?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meldb"));
    cmd.arg("relay")
        .arg("--db")
        .arg(dir.path().join("relay.db"))
        .arg("--schema")
        .arg(&schema)
        .arg("--tokens")
        .arg(&tokens)
        .args(["--listen", "127.0.0.1:0"]);
    let relay = Listening::start(cmd)?;
    let url = format!("tcp://{}", relay.addr);
    let mut args = SMOKE.to_vec();
    args.extend(["--url", &url, "--token", "bench-token"]);
    check_report(&meldb(&args)?)?;
    // Light clients on the same relay: the rows already there are what
    // every listener receives first, and what the fresh replica syncs.
    args.push("--light");
    check_light_report(&meldb(&args)?)
}
