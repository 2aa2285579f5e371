//! The process's allocator, tuned once at start ([`tune_allocator`], from `main`): what keeps a
//! run's peak RSS flat whatever its size (issue 26; BENCHMARKS.md, "A run's memory").
//!
//! glibc's malloc gives each thread that meets contention an arena of its own and raises its
//! mmap threshold each time a large block is freed, so buffers of a few MB (a COPY chunk, a
//! Parquet page, a write batch) come back from the arenas instead of being unmapped, and
//! freed memory fragments across arenas: a whole run of 4,000,000 receipts crept from 46 to
//! 70 MB that way while its live heap stayed under 30 MB. One arena and a fixed threshold kept
//! it under 60 MB at the same CPU (a run has three threads: contention is rare). jemalloc
//! (LD_PRELOAD of Debian's) was measured too: 53-66 MB, more than glibc tuned.
//! Nothing else here: no other module depends on this one.

/// Holds glibc's malloc to one arena and a fixed mmap threshold of 128 KiB (blocks above it
/// are mapped and unmapped, never kept). Does nothing on other C libraries.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets malloc's parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
