//! The daemon's heap: how the allocator is set up, and giving freed memory back to the system.

/// Sets glibc's allocator up for a daemon whose memory is mostly small long-lived nodes,
/// allocated by a few FUSE threads, beside short-lived large reply buffers; a no-op elsewhere.
/// Called once at startup, before any thread is spawned.
///
/// - At most two malloc arenas (glibc's default is eight per CPU): each FUSE thread got its own
///   and kept its own free space, about 6 MiB of a 200k-node walk.
/// - A fixed mmap threshold of 128 KiB: glibc otherwise raises it after the first large free,
///   and then every large directory reply buffer came from (and stayed in) an arena's heap.
pub fn tune_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes two integers and only changes the allocator's own settings; it is
    // called before the daemon starts its threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
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
