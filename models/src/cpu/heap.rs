//! The training process's heap policy.
//!
//! Every burn-flex op allocates its output, so one CPU training step allocates and frees
//! hundreds of buffers of 0.1–30 MB. With glibc's defaults most of these are `mmap`ed and
//! `munmap`ed each time, or the heap top is trimmed and regrown, and every new page is
//! zero-filled by the kernel on first touch: page faults, and TLB shootdowns across the
//! pool's threads. [`keep_freed_memory`] makes glibc serve them from its heap and keep freed
//! memory for reuse, which takes about a third off the MNIST `Net`'s step (`kiln-bench ops`).
//! The cost is a resident size that stays at the step's peak.

/// Allocations below this size come from the heap, not from their own `mmap` (glibc's
/// largest allowed threshold on 64-bit targets).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Free memory at the top of the heap is returned to the system only beyond this size.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 256 << 20;

/// Extra memory requested each time the heap grows.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: libc::c_int = 64 << 20;

/// Sets the heap policy above; call it once, first thing in `main`, before threads start.
/// A no-op where the C library is not glibc (the policy is glibc's `mallopt`).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; it is called before any other
    // thread exists, with parameters and values glibc documents for it.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
    }
}

/// glibc's tunable that makes malloc `madvise(MADV_HUGEPAGE)` the memory it obtains from the
/// kernel, so that the kernel's default transparent-huge-page mode (`madvise`) backs the heap
/// with 2 MB pages.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const HUGE_PAGES_TUNABLE: &str = "glibc.malloc.hugetlb";

/// Set (to the user's `GLIBC_TUNABLES`, or empty where it was unset) in the restarted process,
/// which then puts the user's value back for the programs it starts.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const TUNABLES_BEFORE_RESTART: &str = "KILN_GLIBC_TUNABLES_BEFORE_RESTART";

/// Restarts this program with [`HUGE_PAGES_TUNABLE`]`=1` added to `GLIBC_TUNABLES`, unless
/// that variable already names the tunable (so a user's `glibc.malloc.hugetlb=0` wins).
/// glibc reads its tunables only when a process starts, hence the `exec`; call this first
/// thing in `main`, before any thread starts. Where the C library is not glibc, or the `exec`
/// fails, the process goes on as it is.
///
/// The restarted process recognises itself by [`TUNABLES_BEFORE_RESTART`] and goes on, with
/// `GLIBC_TUNABLES` back at the user's value (its own heap keeps the tunable, read at start):
/// so the programs it starts run in the user's environment. That matters for `kiln-bench`,
/// whose PyTorch references must run as their users run them.
///
/// With 2 MB pages the training step's multi-megabyte tensors cost fewer TLB misses and page
/// faults: `kiln-train mnist --epochs 1` trained in 39.4, 39.6 and 38.8 s with the tunable
/// against 40.7, 41.1 and 42.1 s without, alternating runs, and its page faults over the
/// epoch fell from 803,000 to 11,000.
pub fn use_transparent_huge_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if let Some(before) = std::env::var_os(TUNABLES_BEFORE_RESTART) {
            std::env::remove_var(TUNABLES_BEFORE_RESTART);
            if before.is_empty() {
                std::env::remove_var("GLIBC_TUNABLES");
            } else {
                std::env::set_var("GLIBC_TUNABLES", before);
            }
            return;
        }
        let current = std::env::var_os("GLIBC_TUNABLES");
        let current = match current.as_deref().map(std::ffi::OsStr::to_str) {
            Some(None) => return,
            Some(Some(tunables)) => Some(tunables),
            None => None,
        };
        let (Some(tunables), Ok(exe)) = (tunables_with_huge_pages(current), std::env::current_exe()) else {
            return;
        };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            command.arg0(arg0);
        }
        // `exec` returns only when it failed; the process then goes on without the tunable.
        let _failed = command
            .args(args)
            .env("GLIBC_TUNABLES", tunables)
            .env(TUNABLES_BEFORE_RESTART, current.unwrap_or(""))
            .exec();
    }
}

/// `GLIBC_TUNABLES` (`current`, colon-separated `name=value` pairs) with
/// [`HUGE_PAGES_TUNABLE`]`=1` appended, or `None` when it already sets that tunable.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn tunables_with_huge_pages(current: Option<&str>) -> Option<String> {
    let setting = format!("{HUGE_PAGES_TUNABLE}=1");
    match current.filter(|tunables| !tunables.is_empty()) {
        None => Some(setting),
        Some(tunables)
            if tunables
                .split(':')
                .any(|pair| pair.split('=').next() == Some(HUGE_PAGES_TUNABLE)) =>
        {
            None
        }
        Some(tunables) => Some(format!("{tunables}:{setting}")),
    }
}

#[cfg(test)]
mod tests {
    use super::tunables_with_huge_pages;

    #[test]
    fn huge_pages_are_added_to_the_tunables_unless_already_set() {
        assert_eq!(
            tunables_with_huge_pages(None).as_deref(),
            Some("glibc.malloc.hugetlb=1")
        );
        assert_eq!(
            tunables_with_huge_pages(Some("")).as_deref(),
            Some("glibc.malloc.hugetlb=1")
        );
        assert_eq!(
            tunables_with_huge_pages(Some("glibc.malloc.mmap_threshold=4096")).as_deref(),
            Some("glibc.malloc.mmap_threshold=4096:glibc.malloc.hugetlb=1")
        );
        assert_eq!(tunables_with_huge_pages(Some("glibc.malloc.hugetlb=0")), None);
        assert_eq!(
            tunables_with_huge_pages(Some("glibc.malloc.top_pad=1:glibc.malloc.hugetlb=2")),
            None
        );
        // A tunable whose name only starts like it is another one.
        assert_eq!(
            tunables_with_huge_pages(Some("glibc.malloc.hugetlbx=0")).as_deref(),
            Some("glibc.malloc.hugetlbx=0:glibc.malloc.hugetlb=1")
        );
    }
}
