use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::host::bindings::medic::plugin::command::{CommandError, CommandOutput, Host};
use crate::host::sandbox::StoreState;

use super::DeadlineExceeded;

/// Output kept per stream; the rest is drained and dropped so the child never blocks on a pipe.
pub const MAX_COMMAND_OUTPUT: usize = 256 << 10;

/// A program a runbook allows, with one full-match pattern per argument.
#[derive(Debug, Clone)]
pub struct CommandGrant {
    pub program: String,
    pub args: Vec<regex::Regex>,
}

impl CommandGrant {
    /// `args` are regular expressions, each matched against the whole argument.
    pub fn new(program: &str, args: &[String]) -> Result<Self, String> {
        if !program.starts_with('/') {
            return Err(format!(
                "`{program}` is not an absolute path: grant the exact program (e.g. /usr/bin/systemctl)"
            ));
        }
        let args = args
            .iter()
            .map(|a| {
                regex::Regex::new(&format!("^(?:{a})$")).map_err(|e| {
                    format!(
                        "argument pattern `{a}`: {}",
                        e.to_string().lines().last().unwrap_or_default().trim()
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(CommandGrant {
            program: program.to_owned(),
            args,
        })
    }

    fn allows(&self, program: &str, args: &[String]) -> bool {
        self.program == program
            && self.args.len() == args.len()
            && self.args.iter().zip(args).all(|(re, a)| re.is_match(a))
    }
}

async fn read_capped(mut pipe: impl tokio::io::AsyncRead + Unpin) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut truncated = false;
    while let Ok(n) = pipe.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = MAX_COMMAND_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
        truncated |= n > room;
    }
    (kept, truncated)
}

/// Kills a command's whole process group when dropped (a shell's background children
/// included, which would otherwise outlive the call and medic).
struct ProcessGroup(u32);

impl ProcessGroup {
    fn kill(&self) {
        // SAFETY: kill(2) on the group this call created (its leader's pid is the group id);
        // a group already gone is ESRCH, ignored.
        unsafe {
            libc::kill(-(self.0 as i32), libc::SIGKILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Host for StoreState {
    async fn run(
        &mut self,
        program: String,
        args: Vec<String>,
        timeout_ms: Option<u64>,
    ) -> wasmtime::Result<Result<CommandOutput, CommandError>> {
        let start = Instant::now();
        // Arguments are recorded: they are what an auditor needs to see, and secrets belong in
        // files or environment the program reads itself, not in argv (which `ps` shows).
        let detail = format!("{program} {}", args.join(" "));
        if !self
            .caps
            .grants
            .command
            .iter()
            .any(|g| g.allows(&program, &args))
        {
            let reason = if self.caps.grants.command.is_empty() {
                "commands are not granted to this plugin".to_owned()
            } else {
                "not an allowed program with allowed arguments".to_owned()
            };
            return Ok(Err(CommandError::Denied(
                self.caps.deny("command", detail, reason),
            )));
        }
        let start = self.caps.before_acting(start)?;
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group: whatever it starts is killed with it.
            .process_group(0);
        let umask = crate::private::user_umask();
        // SAFETY: umask(2) is async-signal-safe; nothing else runs between fork and exec.
        // The command creates files as the user would, not with medic's private 077.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(umask);
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.caps
                    .record("command", detail, true, format!("error: {e}"), start);
                return Ok(Err(CommandError::Failed(format!(
                    "cannot start {program}: {e}"
                ))));
            }
        };
        let remaining = self.caps.remaining();
        let own = timeout_ms.map(Duration::from_millis);
        let limit = own.map_or(remaining, |t| t.min(remaining));
        let cut_by_deadline = own.is_none_or(|t| t >= remaining);
        let (out, err) = (
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        // The group outlives nothing: at the deadline, at the end, or when the call is
        // dropped, every process the command started is killed with it.
        let group = child.id().map(ProcessGroup);
        let work = async {
            let reads = async { tokio::join!(read_capped(out), read_capped(err)) };
            let waited = async {
                let status = child.wait().await;
                // The program is done: what it left running (holding its pipes open) goes
                // with it, so the reads end now rather than at the deadline.
                if let Some(g) = &group {
                    g.kill();
                }
                status
            };
            let ((o, e), status) = tokio::join!(reads, waited);
            (o, e, status)
        };
        match tokio::time::timeout(limit, work).await {
            Err(_) => {
                // kill_on_drop reaps it; kill now so it cannot outlive the call.
                let _ = child.start_kill();
                self.caps.record(
                    "command",
                    detail,
                    true,
                    "killed at its timeout".into(),
                    start,
                );
                if cut_by_deadline {
                    Err(wasmtime::Error::new(DeadlineExceeded))
                } else {
                    Ok(Err(CommandError::Timeout(format!(
                        "{program} did not finish within {}; killed",
                        humantime::format_duration(limit)
                    ))))
                }
            }
            Ok(((stdout, t1), (stderr, t2), status)) => {
                let code = status.ok().and_then(|s| s.code());
                let shown = code.map_or("killed by a signal".to_owned(), |c| format!("exit {c}"));
                self.caps.record("command", detail, true, shown, start);
                Ok(Ok(CommandOutput {
                    exit_code: code,
                    stdout,
                    stderr,
                    truncated: t1 || t2,
                }))
            }
        }
    }
}
