//! Whether a run's process is still alive, told on the machine that ran it.
//!
//! A run's ledger row names its process: the host, the pid, the kernel's boot id
//! (`/proc/sys/kernel/random/boot_id`), the pid namespace (`/proc/self/ns/pid`: containers
//! on one kernel share the boot id but number their processes apart) and the process's start
//! time (field 22 of `/proc/PID/stat`, clock ticks since boot: a pid reused by another
//! process starts at another time). A repair on the same kernel and in the same pid namespace
//! can then tell at once that a run's process is gone, and need not wait for its lease; a run
//! of another machine (or namespace, or without these columns) keeps the lease rule. Reads
//! `/proc` only; knows nothing of Postgres.

use std::path::Path;

/// Who runs this process, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub host: String,
    pub pid: u32,
    /// The kernel's boot id; `None` where `/proc` does not tell it.
    pub boot_id: Option<String>,
    /// The inode of the pid namespace (`pid:[4026531836]`).
    pub pid_namespace: Option<i64>,
    /// Clock ticks from boot to the process's start.
    pub start_ticks: Option<i64>,
}

impl Identity {
    /// This process.
    pub fn this() -> Identity {
        let pid = std::process::id();
        Identity {
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid,
            boot_id: boot_id(),
            pid_namespace: pid_namespace(),
            start_ticks: start_ticks(pid),
        }
    }
}

/// What this machine can tell about another run's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Same kernel and pid namespace, and no process with that pid and start time: dead.
    Gone,
    /// It is there.
    Alive,
    /// Another machine's (or namespace's), or a row without the identity: the lease decides.
    Unknown,
}

/// A run's recorded process as seen from `me`.
pub fn of(
    me: &Identity,
    boot_id: Option<&str>,
    pid_namespace: Option<i64>,
    pid: i32,
    start_ticks: Option<i64>,
) -> Liveness {
    let same_kernel = me.boot_id.is_some() && me.boot_id.as_deref() == boot_id;
    let same_namespace = me.pid_namespace.is_some() && me.pid_namespace == pid_namespace;
    let (Some(recorded), true, true) = (start_ticks, same_kernel, same_namespace) else {
        return Liveness::Unknown;
    };
    let Ok(pid) = u32::try_from(pid) else {
        return Liveness::Unknown;
    };
    match self::start_ticks(pid) {
        Some(now) if now == recorded => Liveness::Alive,
        // Gone, or the pid now belongs to a process started at another time.
        _ => Liveness::Gone,
    }
}

fn boot_id() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = text.trim();
    (!id.is_empty()).then(|| id.to_string())
}

fn pid_namespace() -> Option<i64> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    parse_namespace(&link.to_string_lossy())
}

/// `pid:[4026531836]` → 4026531836.
fn parse_namespace(link: &str) -> Option<i64> {
    link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks since boot.
pub fn start_ticks(pid: u32) -> Option<i64> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    parse_start_ticks(&stat)
}

/// The start time in a `/proc/PID/stat` line. The second field, the command name in
/// parentheses, may hold spaces and parentheses itself: fields are counted after its last `)`.
fn parse_start_ticks(stat: &str) -> Option<i64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: field 22 is the 20th of them.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_field_22_whatever_the_command_name() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_start_ticks(stat), Some(987654));
        assert_eq!(parse_start_ticks("1 (x) S"), None);
        assert_eq!(parse_namespace("pid:[4026531836]"), Some(4026531836));
        assert_eq!(parse_namespace("net:[1]"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_dead_one_is_gone_on_this_machine_only() {
        let me = Identity::this();
        let (boot, ns) = (me.boot_id.clone(), me.pid_namespace);
        assert!(
            boot.is_some() && ns.is_some() && me.start_ticks.is_some(),
            "{me:?}"
        );
        let alive = of(&me, boot.as_deref(), ns, me.pid as i32, me.start_ticks);
        assert_eq!(alive, Liveness::Alive);
        // The same pid started at another time: another process, so ours is gone.
        let reused = of(&me, boot.as_deref(), ns, me.pid as i32, Some(-1));
        assert_eq!(reused, Liveness::Gone);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let started = start_ticks(pid);
        child.wait().unwrap();
        assert_eq!(
            of(&me, boot.as_deref(), ns, pid as i32, started.or(Some(1))),
            Liveness::Gone
        );
        // Another kernel, another namespace, or no identity recorded: the lease decides.
        let other = of(&me, Some("another-boot"), ns, pid as i32, started);
        assert_eq!(other, Liveness::Unknown);
        assert_eq!(
            of(&me, boot.as_deref(), Some(1), pid as i32, started),
            Liveness::Unknown
        );
        assert_eq!(of(&me, None, None, pid as i32, None), Liveness::Unknown);
    }
}
