//! What `meldb bench-relay` reads about a process from Linux's `/proc`:
//! CPU time (of the whole process, or of its threads whose name starts
//! with a prefix), peak and current resident memory, the open-file limit.
//!
//! Invariant: reading never fails the bench. Where `/proc` is missing
//! (not Linux) or a file does not parse, the reading is `None` and the
//! report says "n/a"; nothing here changes the process.

use std::fs;
use std::time::Duration;

/// Linux's `USER_HZ`: the unit of `/proc/*/stat` CPU times, 100 on every
/// architecture Linux supports (`sysconf(_SC_CLK_TCK)` would need libc).
const TICKS_PER_SECOND: u64 = 100;

/// `utime + stime` from a `/proc/.../stat` line. The second field (the
/// name) is in parentheses and may hold spaces, so fields count from the
/// last `)`: utime and stime are fields 14 and 15.
fn cpu_of_stat(text: &str) -> Option<Duration> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) is index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SECOND,
    ))
}

/// CPU time (user + system) of process `pid` (`None`: this process), all
/// its threads, including those that ended.
pub fn process_cpu(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    cpu_of_stat(&fs::read_to_string(path).ok()?)
}

/// CPU time of this process's live threads whose name starts with
/// `prefix` (threads that ended are not counted: keep them alive).
pub fn threads_cpu(prefix: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for entry in fs::read_dir("/proc/self/task").ok()? {
        let Ok(entry) = entry else { continue };
        let dir = entry.path();
        let Ok(name) = fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        if let Some(cpu) = fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|s| cpu_of_stat(&s))
        {
            total += cpu;
        }
    }
    Some(total)
}

/// A `kB` line of `/proc/<pid>/status`, in bytes.
fn status_kb(pid: Option<u32>, key: &str) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let text = fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Peak resident memory (`VmHWM`), in bytes.
pub fn peak_rss(pid: Option<u32>) -> Option<u64> {
    status_kb(pid, "VmHWM:")
}

/// Resident memory now (`VmRSS`), in bytes.
pub fn rss(pid: Option<u32>) -> Option<u64> {
    status_kb(pid, "VmRSS:")
}

/// This process's soft limit on open files (`/proc/self/limits`).
pub fn open_files_limit() -> Option<u64> {
    let text = fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Bytes as MiB with one decimal, or "n/a".
pub fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".to_string(), |b| {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_name_end() {
        let line = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(cpu_of_stat(line), Some(Duration::from_secs(3)));
        assert_eq!(cpu_of_stat("garbage"), None);
    }
}
