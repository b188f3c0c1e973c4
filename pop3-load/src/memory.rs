//! A server's memory over its whole process tree (Dovecot runs a process
//! per connection; pop3d one for all): resident set and proportional set
//! size, from `/proc`.

use std::fs;

/// Memory summed over a process and its descendants, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TreeMemory {
    /// Resident set (pages shared between the processes counted in each).
    pub(crate) rss_kib: u64,
    /// Proportional set size (shared pages split among their sharers).
    pub(crate) pss_kib: u64,
    /// Processes counted.
    pub(crate) processes: usize,
}

/// The process `pid` and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.flatten() {
                let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
                all.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    all.sort_unstable();
    all.dedup();
    all
}

/// A `Name:   123 kB` field of a `/proc` file.
fn field_kib(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples the memory of `pid`'s process tree now.
pub(crate) fn sample(pid: u32) -> TreeMemory {
    let mut total = TreeMemory::default();
    for p in tree(pid) {
        let Ok(rollup) = fs::read_to_string(format!("/proc/{p}/smaps_rollup")) else {
            continue;
        };
        total.rss_kib += field_kib(&rollup, "Rss");
        total.pss_kib += field_kib(&rollup, "Pss");
        total.processes += 1;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let m = sample(std::process::id());
        assert!(m.processes >= 1 && m.rss_kib > 0 && m.pss_kib > 0, "{m:?}");
        assert_eq!(field_kib("Rss:     1234 kB\nPss: 5 kB\n", "Pss"), 5);
    }
}
