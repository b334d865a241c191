//! The CPUs a thread may run on, and keeping a thread on some of them: the store's flushing
//! thread beside the disk's interrupts ([`crate::store::near_disk`]), and each call thread on
//! a CPU of its own ([`crate::host`]'s call threads).

/// A set of CPUs, as the kernel lists them.
#[derive(Clone, PartialEq, Eq)]
pub struct Cpus(pub(crate) Vec<usize>);

impl std::fmt::Debug for Cpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.0.iter().map(usize::to_string).collect();
        write!(f, "{}", list.join(","))
    }
}

impl Cpus {
    /// The CPUs this thread may run on that are not among these (for the benchmark's floor
    /// measured away from the disk's interrupts).
    pub fn others(&self) -> Option<Cpus> {
        let rest: Vec<usize> = allowed()?
            .0
            .into_iter()
            .filter(|c| !self.0.contains(c))
            .collect();
        (!rest.is_empty()).then_some(Cpus(rest))
    }

    /// Each of these CPUs alone.
    pub fn each(&self) -> Vec<Cpus> {
        self.0.iter().map(|&c| Cpus(vec![c])).collect()
    }

    /// How many CPUs are in the set.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set has no CPU.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps the calling thread on these CPUs; returns whether it is. Not kept where it
    /// cannot be: a set is only where a thread runs quicker, never what makes it work.
    pub fn keep_this_thread(&self) -> bool {
        match set_affinity(&self.0) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("could not keep a thread on CPUs {self:?}: {e}");
                false
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn set_affinity(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid, empty set; CPU_SET is given indices below
    // CPU_SETSIZE only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_affinity(_cpus: &[usize]) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// The CPUs this thread may run on (to be kept again after [`Cpus::keep_this_thread`]).
#[cfg(target_os = "linux")]
pub fn allowed() -> Option<Cpus> {
    // SAFETY: a zeroed cpu_set_t is valid; the kernel fills at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        Some(Cpus(
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect(),
        ))
    }
}

/// The CPUs this thread may run on: not told here.
#[cfg(not(target_os = "linux"))]
pub fn allowed() -> Option<Cpus> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_kept_on_one_cpu_is_seen_there_by_the_kernel_and_let_go_again() {
        let Some(may) = allowed() else { return };
        assert!(!may.is_empty());
        std::thread::spawn(move || {
            let last = may.each().pop().unwrap();
            assert!(last.keep_this_thread());
            assert_eq!(allowed(), Some(last.clone()));
            assert_eq!(last.len(), 1);
            // Kept there, it may use no other.
            assert_eq!(last.others(), None);
            may.keep_this_thread();
            assert_eq!(allowed(), Some(may));
        })
        .join()
        .unwrap();
    }
}
