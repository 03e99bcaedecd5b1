//! CPU time of processes, read from `/proc`, for benchmarks: who spent the
//! machine's cores on a piece of work (this process, a service binary,
//! PostgreSQL's backends, nats-server). On a 2-core machine shared by all
//! of them, CPU time per record is a steadier yardstick than a rate, which
//! moves by ±20 % between runs of the same work.

use std::collections::HashMap;

/// Clock ticks per second of `/proc/<pid>/stat` times: 100 on Linux
/// (USER_HZ).
pub const HZ: f64 = 100.0;

/// One process's CPU time.
#[derive(Debug, Clone)]
pub struct ProcessTime {
    pub pid: i32,
    /// The command name (`comm`: `postgres`, `nats-server`, …).
    pub comm: String,
    /// User + system time, in clock ticks ([`HZ`]), of all its threads.
    pub ticks: u64,
}

/// Every process's CPU time now (those that cannot be read are left out).
pub fn processes() -> Vec<ProcessTime> {
    let mut all = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return all;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((comm, ticks)) = parse_stat(&stat) {
            all.push(ProcessTime {
                pid,
                comm: comm.to_string(),
                ticks,
            });
        }
    }
    all
}

/// `comm` and utime + stime of a `/proc/<pid>/stat` line. The command is
/// in parentheses and may hold spaces and parentheses itself: the fields
/// follow the last `)`.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(').map_or("", |(_, c)| c);
    let mut fields = rest.split_whitespace();
    // After the command: state is field 3; utime and stime are 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

/// CPU time spent between two [`processes`] readings, in seconds, summed by
/// the group `group_of` gives each process (`None`: not counted).
/// Processes started in between count from zero; those that ended in
/// between are lost.
pub fn seconds_between(
    before: &[ProcessTime],
    after: &[ProcessTime],
    group_of: impl Fn(&ProcessTime) -> Option<&'static str>,
) -> HashMap<&'static str, f64> {
    let earlier: HashMap<i32, u64> = before.iter().map(|p| (p.pid, p.ticks)).collect();
    let mut by_group: HashMap<&'static str, f64> = HashMap::new();
    for p in after {
        if let Some(group) = group_of(p) {
            let spent = p
                .ticks
                .saturating_sub(earlier.get(&p.pid).copied().unwrap_or(0));
            *by_group.entry(group).or_default() += spent as f64 / HZ;
        }
    }
    by_group
}

/// The usual grouping for [`seconds_between`]: each process of `named`
/// (pid, group) under its own name, then every `postgres` process as
/// "postgres" and every `nats-server` as "nats"; the rest not counted.
pub fn services_and<'a>(
    named: &'a [(i32, &'static str)],
) -> impl Fn(&ProcessTime) -> Option<&'static str> + 'a {
    move |p| {
        if let Some((_, group)) = named.iter().find(|(pid, _)| *pid == p.pid) {
            Some(*group)
        } else if p.comm == "postgres" {
            Some("postgres")
        } else if p.comm == "nats-server" {
            Some("nats")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_with_spaces_and_parentheses_is_read_whole() {
        let stat = "42 (tokio (worker) 1) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 5 0";
        assert_eq!(parse_stat(stat), Some(("tokio (worker) 1", 10)));
    }

    #[test]
    fn this_process_spends_time() {
        let me = std::process::id() as i32;
        let before = processes();
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = processes();
        let spent = seconds_between(&before, &after, |p| (p.pid == me).then_some("me"));
        assert!(spent.contains_key("me"));
    }

    #[test]
    fn named_processes_come_first_then_the_services() {
        let p = |pid, comm: &str| ProcessTime {
            pid,
            comm: comm.into(),
            ticks: 0,
        };
        let group = services_and(&[(7, "loader"), (8, "matcher")]);
        assert_eq!(group(&p(7, "postgres")), Some("loader"));
        assert_eq!(group(&p(8, "matcher")), Some("matcher"));
        assert_eq!(group(&p(9, "postgres")), Some("postgres"));
        assert_eq!(group(&p(10, "nats-server")), Some("nats"));
        assert_eq!(group(&p(11, "bash")), None);
    }
}
