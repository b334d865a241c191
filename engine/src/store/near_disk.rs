//! The thread that waits in the store's `fdatasync` is kept on the CPUs that take the disk's
//! completion interrupts, where there are fewer of those than CPUs (a virtual machine's
//! single-queue disk). Else the interrupt lands on one virtual CPU, which is often halted
//! (woken through the hypervisor) and which must then wake the waiting thread on the other:
//! two late wake-ups per flush where one would do. Measured on the development machine (2
//! vCPUs, the disk's interrupts on CPU 1): a bare loop of write + `fdatasync` takes 176 to
//! 192 µs on CPU 0 and 113 to 114 µs on CPU 1; a durable action step, medians of 7 rounds
//! interleaved with the build before, 162.8 -> 146.9 µs in the process and 153 -> 144 µs
//! through the store daemon (bench/JOURNAL.md, 2026-12-06). A disk with a queue per CPU (NVMe) takes
//! interrupts on every CPU, and nothing is pinned.

use std::path::{Path, PathBuf};

use crate::cpus::{Cpus, allowed};

/// The CPUs that take the completion interrupts of the disk holding `dir`, when they are
/// fewer than the CPUs this thread may run on (and among them). None where that cannot be
/// told: not Linux, a file system on no single disk (tmpfs, overlay, device mapper, RAID),
/// or a disk whose interrupts are not found.
pub fn of(dir: &Path) -> Option<Cpus> {
    let allowed = allowed()?;
    let disk = Sysfs::real().interrupt_cpus(device_of(dir)?)?;
    narrower(&disk, &allowed)
}

/// `disk`'s CPUs among `allowed`, if that is some of them but not all.
fn narrower(disk: &Cpus, allowed: &Cpus) -> Option<Cpus> {
    let mut both: Vec<usize> = disk
        .0
        .iter()
        .copied()
        .filter(|c| allowed.0.contains(c))
        .collect();
    both.sort_unstable();
    both.dedup();
    (!both.is_empty() && both.len() < allowed.0.len()).then_some(Cpus(both))
}

#[cfg(target_os = "linux")]
fn device_of(dir: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    Some((libc::major(dev), libc::minor(dev)))
}

#[cfg(not(target_os = "linux"))]
fn device_of(_dir: &Path) -> Option<(u32, u32)> {
    None
}

/// Where the kernel tells of block devices and interrupts: `/sys` and `/proc/irq`, or a
/// tree made by a test.
struct Sysfs {
    sys: PathBuf,
    irq: PathBuf,
}

impl Sysfs {
    fn real() -> Sysfs {
        Sysfs {
            sys: PathBuf::from("/sys"),
            irq: PathBuf::from("/proc/irq"),
        }
    }

    /// The CPUs the interrupts of block device `major:minor` are delivered to.
    fn interrupt_cpus(&self, (major, minor): (u32, u32)) -> Option<Cpus> {
        // Anonymous devices (tmpfs, overlay, btrfs subvolumes) are on no disk of their own.
        if major == 0 {
            return None;
        }
        let mut block = self
            .sys
            .join(format!("dev/block/{major}:{minor}"))
            .canonicalize()
            .ok()?;
        if block.join("partition").exists() {
            block = block.parent()?.to_owned();
        }
        // Device mapper, RAID: their writes go to several disks.
        if std::fs::read_dir(block.join("slaves")).is_ok_and(|mut entries| entries.next().is_some())
        {
            return None;
        }
        // The disk's interrupts are its PCI function's: virtio's block device sits one level
        // below it, NVMe's namespace two (the controller, then the function).
        let device = block.join("device").canonicalize().ok()?;
        let irqs = device
            .ancestors()
            .take(3)
            .map(|d| d.join("msi_irqs"))
            .find(|d| d.is_dir())?;
        let mut cpus = Vec::new();
        for irq in std::fs::read_dir(irqs).ok()?.flatten() {
            let dir = self.irq.join(irq.file_name());
            let list = std::fs::read_to_string(dir.join("effective_affinity_list"))
                .or_else(|_| std::fs::read_to_string(dir.join("smp_affinity_list")))
                .ok()?;
            cpus.extend(parse_list(&list)?.0);
        }
        cpus.sort_unstable();
        cpus.dedup();
        (!cpus.is_empty()).then_some(Cpus(cpus))
    }
}

/// A kernel CPU list: `0-3,8,10-11`.
fn parse_list(text: &str) -> Option<Cpus> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                if b < a || b - a > 4096 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(Cpus(cpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(list: &[usize]) -> Cpus {
        Cpus(list.to_vec())
    }

    #[test]
    fn kernel_cpu_lists_are_read_and_nonsense_is_not() {
        assert_eq!(parse_list("1\n"), Some(cpus(&[1])));
        assert_eq!(
            parse_list("0-3,8,10-11"),
            Some(cpus(&[0, 1, 2, 3, 8, 10, 11]))
        );
        assert_eq!(parse_list(""), Some(cpus(&[])));
        assert_eq!(parse_list("3-1"), None);
        assert_eq!(parse_list("a"), None);
        assert_eq!(parse_list("0-99999999"), None);
    }

    #[test]
    fn only_a_narrower_set_among_the_allowed_cpus_is_kept() {
        assert_eq!(narrower(&cpus(&[1]), &cpus(&[0, 1])), Some(cpus(&[1])));
        // Every CPU takes interrupts (a queue per CPU): nothing to gain.
        assert_eq!(narrower(&cpus(&[1, 0, 1]), &cpus(&[0, 1])), None);
        // The interrupts' CPU is not one this process may use.
        assert_eq!(narrower(&cpus(&[3]), &cpus(&[0, 1])), None);
        assert_eq!(
            narrower(&cpus(&[2, 3, 5]), &cpus(&[0, 1, 2, 3])),
            Some(cpus(&[2, 3]))
        );
    }

    /// A sysfs and /proc/irq tree as the development machine's: a virtio disk `vda` with a
    /// partition, its PCI function's two interrupts on CPU 1.
    fn fake_tree(root: &Path) -> Sysfs {
        let mk = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
        let write = |p: &str, text: &str| std::fs::write(root.join(p), text).unwrap();
        let link = |target: &str, at: &str| {
            std::os::unix::fs::symlink(root.join(target), root.join(at)).unwrap()
        };
        mk("sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda/vda1");
        mk("sys/devices/pci0000:00/0000:00:02.0/msi_irqs/35");
        mk("sys/devices/pci0000:00/0000:00:02.0/msi_irqs/36");
        mk("sys/devices/virtual/block/dm-0/slaves/vda1");
        mk("sys/devices/virtual/block/loop0/device");
        mk("sys/dev/block");
        write(
            "sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda/vda1/partition",
            "1",
        );
        link(
            "sys/devices/pci0000:00/0000:00:02.0/virtio1",
            "sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda/device",
        );
        link(
            "sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda",
            "sys/dev/block/254:0",
        );
        link(
            "sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda/vda1",
            "sys/dev/block/254:1",
        );
        link("sys/devices/virtual/block/dm-0", "sys/dev/block/253:0");
        link("sys/devices/virtual/block/loop0", "sys/dev/block/7:0");
        for (irq, list) in [("35", "1\n"), ("36", "1\n")] {
            mk(&format!("proc/irq/{irq}"));
            write(&format!("proc/irq/{irq}/effective_affinity_list"), list);
        }
        Sysfs {
            sys: root.join("sys"),
            irq: root.join("proc/irq"),
        }
    }

    #[test]
    fn a_disks_interrupt_cpus_are_found_from_its_device_numbers() {
        let root = tempfile::tempdir().unwrap();
        let sysfs = fake_tree(root.path());
        assert_eq!(sysfs.interrupt_cpus((254, 0)), Some(cpus(&[1])));
        // A partition is on its disk.
        assert_eq!(sysfs.interrupt_cpus((254, 1)), Some(cpus(&[1])));
        // Writes spread over several disks, a device with no interrupts of its own, a
        // device the kernel does not list, an anonymous file system: none.
        assert_eq!(sysfs.interrupt_cpus((253, 0)), None);
        assert_eq!(sysfs.interrupt_cpus((7, 0)), None);
        assert_eq!(sysfs.interrupt_cpus((8, 0)), None);
        assert_eq!(sysfs.interrupt_cpus((0, 42)), None);
        // An interrupt whose CPUs cannot be read: not guessed.
        std::fs::remove_file(root.path().join("proc/irq/36/effective_affinity_list")).unwrap();
        assert_eq!(sysfs.interrupt_cpus((254, 0)), None);
        std::fs::write(root.path().join("proc/irq/36/smp_affinity_list"), "0-1\n").unwrap();
        assert_eq!(sysfs.interrupt_cpus((254, 0)), Some(cpus(&[0, 1])));
    }

    #[test]
    fn on_this_machine_the_set_is_none_or_some_of_the_cpus_this_thread_may_use() {
        let dir = tempfile::tempdir().unwrap();
        if let (Some(found), Some(may)) = (of(dir.path()), allowed()) {
            assert!(!found.0.is_empty() && found.0.len() < may.0.len());
            assert!(found.0.iter().all(|c| may.0.contains(c)));
            let others = found.others().unwrap();
            assert_eq!(others.0.len() + found.0.len(), may.0.len());
            assert!(others.0.iter().all(|c| !found.0.contains(c)));
            // Keeping a thread there works and is seen by the kernel.
            std::thread::spawn(move || {
                found.keep_this_thread();
                assert_eq!(allowed(), Some(found));
                may.keep_this_thread();
                assert_eq!(allowed(), Some(may));
            })
            .join()
            .unwrap();
        }
    }
}
