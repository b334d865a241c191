//! The readiness probe's check of the store: bounded in time, and one at a time.
//!
//! A store that stops answering (a stopped database, a disk that hangs) holds its caller in a
//! blocking call, up to the store's own bound of 5 minutes. The probe answers within
//! [`READY_WAIT`] regardless, and a probe made while an earlier one's check is still waiting
//! joins that check instead of holding one more thread: a load balancer probing every few
//! seconds through a long stall does not pile up blocked threads.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

/// How long `GET /ready` waits for each of what it checks (the store, the scheduler).
pub(super) const READY_WAIT: Duration = Duration::from_secs(5);

type Check = Shared<BoxFuture<'static, Result<(), String>>>;

/// The check of the store in flight, if any, and when it began.
#[derive(Default)]
pub(crate) struct StoreProbe(Mutex<Option<(Instant, Check)>>);

impl StoreProbe {
    /// Runs `check` on a blocking thread, or joins the one already running, and waits at
    /// most `wait` for its answer: "no answer for N s" past it, N counted from when the
    /// check in flight began.
    pub(super) async fn check(
        &self,
        check: impl FnOnce() -> Result<(), String> + Send + 'static,
        wait: Duration,
    ) -> Result<(), String> {
        let (since, running) = {
            let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                // Still waiting for the store: joined.
                Some((since, running)) if !ended(running) => (*since, running.clone()),
                // None, or one that has answered (an earlier probe's answer is not this
                // one's): a fresh check.
                _ => {
                    let running = async move {
                        tokio::task::spawn_blocking(check)
                            .await
                            .unwrap_or_else(|e| Err(format!("the check's task failed: {e}")))
                    }
                    .boxed()
                    .shared();
                    let since = Instant::now();
                    *slot = Some((since, running.clone()));
                    (since, running)
                }
            }
        };
        match tokio::time::timeout(wait, running).await {
            Ok(answer) => answer,
            Err(_) => Err(format!(
                "no answer for {:.1} s",
                since.elapsed().as_secs_f64()
            )),
        }
    }
}

/// Whether a check no probe is waiting for has answered meanwhile (nothing polls it then,
/// so `peek` does not know).
fn ended(running: &Check) -> bool {
    running.clone().now_or_never().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store that does not answer until opened, counting the checks made of it.
    #[derive(Clone, Default)]
    struct Held {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        checks: Arc<AtomicUsize>,
    }

    impl Held {
        fn check(&self) -> impl FnOnce() -> Result<(), String> + Send + 'static {
            let held = self.clone();
            move || {
                held.checks.fetch_add(1, Ordering::SeqCst);
                let (open, turn) = &*held.open;
                let guard = open.lock().unwrap();
                // Bounded: a test that fails does not leave a thread behind for ever.
                let (guard, _) = turn
                    .wait_timeout_while(guard, Duration::from_secs(30), |open| !*open)
                    .unwrap();
                if *guard {
                    Ok(())
                } else {
                    Err("never opened".to_owned())
                }
            }
        }

        fn open(&self) {
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }

        fn checks(&self) -> usize {
            self.checks.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn a_store_that_does_not_answer_is_told_in_time_and_checked_once_until_it_answers() {
        let probe = StoreProbe::default();
        let held = Held::default();
        let wait = Duration::from_millis(200);

        let asked = Instant::now();
        let first = probe.check(held.check(), wait).await.unwrap_err();
        assert!(first.starts_with("no answer for 0."), "{first}");
        assert!(asked.elapsed() < Duration::from_secs(5));
        assert_eq!(held.checks(), 1);

        // A second probe joins the check still waiting, and counts from its beginning.
        let second = probe.check(held.check(), wait).await.unwrap_err();
        let waited: f64 = second
            .strip_prefix("no answer for ")
            .and_then(|s| s.strip_suffix(" s"))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{second}"));
        assert!(
            waited >= 0.4,
            "counted from the first probe's check: {second}"
        );
        assert_eq!(held.checks(), 1, "one blocked thread, not one per probe");

        // The store answers: the next probe checks afresh (the held check's late answer
        // is not taken for it) and is answered.
        held.open();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ended(&probe.0.lock().unwrap().as_ref().unwrap().1) {
            assert!(Instant::now() < deadline, "the held check never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(probe.check(held.check(), wait).await, Ok(()));
        assert_eq!(held.checks(), 2);
    }

    #[tokio::test]
    async fn a_store_that_answers_with_an_error_is_told_that_error() {
        let probe = StoreProbe::default();
        let answer = probe
            .check(|| Err("disk full".to_owned()), READY_WAIT)
            .await;
        assert_eq!(answer, Err("disk full".to_owned()));
        assert_eq!(probe.check(|| Ok(()), READY_WAIT).await, Ok(()));
    }
}
