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

impl Process {
    /// Sends `signal` to the process, and only to it: a descriptor of the pid is opened
    /// first and the process checked after (its start time), so a pid reused in between is
    /// never signalled. `ESRCH` when the process is gone.
    pub fn signal(&self, signal: libc::c_int) -> std::io::Result<()> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let gone = || std::io::Error::from_raw_os_error(libc::ESRCH);
        let pid = libc::pid_t::try_from(self.pid).map_err(|_| gone())?;
        // SAFETY: pidfd_open takes a pid and flags, and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOSYS) {
                return Err(e);
            }
            // A kernel before 5.3: checked, then signalled by pid (a pid reused in between,
            // a window of microseconds, is the risk every `kill` takes).
            if !self.alive() {
                return Err(gone());
            }
            // SAFETY: a pid and a signal number.
            if unsafe { libc::kill(pid, signal) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            return Ok(());
        }
        // SAFETY: the descriptor was just opened, and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        if !self.alive() {
            return Err(gone());
        }
        // SAFETY: a descriptor of ours, a signal number, no siginfo, no flags.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The process's command line, as it was started (none if it cannot be read).
    pub fn command_line(&self) -> Option<Vec<String>> {
        let raw = std::fs::read(format!("/proc/{}/cmdline", self.pid)).ok()?;
        Some(
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
        )
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
        // `spawn` returns once the child is in `execve`, which sets the new command line a
        // moment later: read until it is there.
        let mut args = Vec::new();
        for _ in 0..400 {
            args = it.command_line().unwrap_or_default();
            if !args.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(args, ["sleep", "30"]);
        let e = reused_of(&it).signal(libc::SIGTERM).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ESRCH),
            "another start time: not signalled"
        );
        assert!(it.alive());
        it.signal(libc::SIGTERM).unwrap();
        // Killed but not reaped: a zombie is not alive.
        for _ in 0..200 {
            if !it.alive() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!it.alive(), "a killed child (a zombie until reaped)");
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(!it.alive());
        assert_eq!(
            it.signal(libc::SIGTERM).unwrap_err().raw_os_error(),
            Some(libc::ESRCH)
        );
    }

    fn reused_of(p: &Process) -> Process {
        Process {
            pid: p.pid,
            start: p.start.map(|s| s + 1),
        }
    }
}
