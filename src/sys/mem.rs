//! Giving freed heap memory back to the system.

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
