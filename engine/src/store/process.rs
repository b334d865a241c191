//! Whether the process that owns a run on this host still lives. A pid alone does not say:
//! pids are reused, and a killed process stays a zombie until its parent reaps it. A pid
//! and its start time (clock ticks since boot, from `/proc/PID/stat`) name one process for
//! as long as the machine is up.

/// A process on this host, as recorded beside a run or a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// Start time in clock ticks since boot; None where `/proc` does not say.
    pub start: Option<u64>,
}

/// The state letter and start time of a process, from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces and parentheses: the
    // fields after it start at the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 22 of the line is the 20th after the name (state is the 1st).
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// This host's name, as the kernel has it (empty where it does not say).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

impl Process {
    /// This process.
    pub fn this() -> Process {
        let pid = std::process::id();
        Process {
            pid,
            start: stat(pid).map(|(_, start)| start),
        }
    }

    /// Whether the process still runs: not gone, not a zombie, and not another process that
    /// was given the same pid since.
    pub fn alive(&self) -> bool {
        match stat(self.pid) {
            Some((state, start)) => {
                !matches!(state, 'Z' | 'X') && self.start.is_none_or(|s| s == start)
            }
            // No /proc (or no such entry): ask the kernel whether the pid exists.
            None if std::path::Path::new("/proc/self/stat").exists() => false,
            None => {
                let Ok(pid) = libc::pid_t::try_from(self.pid) else {
                    return false;
                };
                // SAFETY: signal 0 only checks that the process exists and may be signalled.
                let r = unsafe { libc::kill(pid, 0) };
                r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Process;

    #[test]
    fn this_process_lives_and_a_reused_pid_or_a_reaped_child_does_not() {
        let me = Process::this();
        assert!(me.start.is_some());
        assert!(me.alive());
        let reused = Process {
            pid: me.pid,
            start: me.start.map(|s| s + 1),
        };
        assert!(!reused.alive(), "same pid, another start time");

        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let it = Process {
            pid: child.id(),
            start: super::stat(child.id()).map(|(_, s)| s),
        };
        assert!(it.alive());
        child.kill().unwrap();
        // Killed but not reaped: a zombie is not alive.
        for _ in 0..200 {
            if !it.alive() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!it.alive(), "a killed child (a zombie until reaped)");
        child.wait().unwrap();
        assert!(!it.alive());
    }
}
