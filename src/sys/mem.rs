//! The daemon's heap: how the allocator is set up, and giving freed memory back to the system.

/// Allocations from this size up are mmapped and given back when freed. The largest READ
/// reply (1 MiB, `max_readahead`) stays below it, in the heap: at 128 KiB every READ's buffers
/// were mmapped, faulted in and unmapped, and a big sequential read took twice as long.
const MMAP_THRESHOLD: libc::c_int = (1 << 20) + 4096;
/// Free memory kept at the top of the heap for the next allocations, so a READ reply's buffer
/// freed and made again is not given back and faulted in each time.
const TRIM_THRESHOLD: libc::c_int = 4 << 20;

/// Sets glibc's allocator up for a daemon whose memory is mostly small long-lived nodes,
/// allocated by a few FUSE threads, beside short-lived large buffers; a no-op elsewhere.
/// Called once at startup, before any thread is spawned.
///
/// - At most two malloc arenas (glibc's default is eight per CPU): each FUSE thread got its own
///   and kept its own free space, about 6 MiB of a 200k-node walk.
/// - Fixed mmap and trim thresholds (above): glibc otherwise raises its mmap threshold to the
///   size of the first large buffer freed, and from then on every larger one (a big directory's
///   listing) came from an arena's heap, and its pages stayed there.
pub fn tune_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes two integers and only changes the allocator's own settings; it is
    // called before the daemon starts its threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Returns the free memory at the top of the heap and the free pages inside every malloc
/// arena to the system (glibc's `malloc_trim`); a no-op elsewhere. It walks the arenas, so
/// it is for rare calls (after the kernel forgot many nodes), not every request.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers and only works on the allocator's own free lists,
    // under the allocator's locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
