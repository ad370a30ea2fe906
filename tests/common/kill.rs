//! Crash tests' worker processes: the test binary re-runs one of its own
//! tests as a worker that prints `ack N` after each durable step, and the
//! test SIGKILLs it after a number of acknowledgements.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Runs test `test` of this binary as a worker with `env` set, kills it
/// (SIGKILL: no destructors, no rollback) once it has acknowledged
/// `kill_after` steps, and returns every acknowledgement it printed,
/// including those that were on their way when the kill landed.
pub fn acks_until_killed(
    test: &str,
    env: &[(&str, String)],
    kill_after: usize,
) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut acks = Vec::new();
    // Read to the end: acknowledgements printed before the kill landed are
    // acknowledgements too.
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        // The test harness prints its own text, which may share a line with
        // an acknowledgement.
        let ack = line.split("ack ").nth(1).map(|r| r.trim().parse::<u64>());
        if let Some(Ok(step)) = ack {
            acks.push(step);
            if acks.len() == kill_after {
                child.kill()?;
            }
        }
    }
    child.wait()?;
    if acks.is_empty() {
        return Err("the worker acknowledged nothing".into());
    }
    Ok(acks)
}
