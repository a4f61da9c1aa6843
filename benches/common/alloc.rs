//! The global allocator of the benches and examples, as the README's allocator tip recommends:
//! mimalloc, told to keep the memory it frees mapped.
//!
//! A training step frees and reallocates the same large temporaries every iteration. glibc's
//! malloc returns them to the OS and page-faults them in again; mimalloc keeps them, but by
//! default purges (decommits) freed memory after a delay, so a step that takes longer than the
//! delay still faults its temporaries back in as zeroed pages (ViT step: 30 553 page faults per
//! bench run). Switching the purge off (`mi_option_purge_delay = -1`, what the environment
//! variable `MIMALLOC_PURGE_DELAY=-1` does) removes them; the price is that the process keeps
//! its peak memory until it exits. docs/PERFORMANCE.md ("The allocator") has the numbers.
//!
//! The option's default is set on the first allocation, so no `main` needs a call and no
//! environment variable is needed; one that is set still wins (`MIMALLOC_PURGE_DELAY=1000`, the
//! default of the mimalloc that `libmimalloc-sys` builds, measures purging again). To use the same
//! setup in your own binary, copy this file next to its `main.rs`, add `mod alloc;` and depend on
//! `mimalloc`. Build with `RUSTFLAGS="--cfg system_allocator"` to measure the system allocator
//! instead.

#[cfg(not(system_allocator))]
#[global_allocator]
static GLOBAL: KeepMapped = KeepMapped;

/// mimalloc with purging switched off by default (set once, on the first allocation).
#[cfg(not(system_allocator))]
struct KeepMapped;

#[cfg(not(system_allocator))]
mod keep_mapped {
    use std::alloc::{GlobalAlloc, Layout};
    use std::ffi::{c_int, c_long};
    use std::sync::Once;

    use mimalloc::MiMalloc;

    extern "C" {
        // mimalloc's C API (mimalloc.h), in the static library that `libmimalloc-sys` links.
        fn mi_option_set_default(option: c_int, value: c_long);
    }

    /// `mi_option_purge_delay` in mimalloc.h's `mi_option_t` (v3, what `libmimalloc-sys`
    /// builds by default; the Rust crate names no constant for it).
    const PURGE_DELAY: c_int = 15;

    static CONFIGURED: Once = Once::new();

    /// Makes "no purging" the default (a `MIMALLOC_PURGE_DELAY` in the environment overrides
    /// it); a no-op after the first call. `Once` does not allocate, so calling this inside the
    /// allocator does not recurse.
    #[inline(always)]
    fn configure() {
        // SAFETY: `mi_option_set_default` stores a value in mimalloc's option table unless the
        // environment set that option (no allocation, no other effect); `Once` runs it on one
        // thread only.
        CONFIGURED.call_once(|| unsafe { mi_option_set_default(PURGE_DELAY, -1) });
    }

    // SAFETY: every method forwards to `MiMalloc`, which upholds the `GlobalAlloc` contract;
    // `configure` does not allocate and does not touch any allocation.
    unsafe impl GlobalAlloc for super::KeepMapped {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            configure();
            // SAFETY: the caller's guarantees on `layout` are passed on unchanged.
            unsafe { MiMalloc.alloc(layout) }
        }

        #[inline]
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            configure();
            // SAFETY: as in `alloc`.
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }

        #[inline]
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from `MiMalloc` (every allocation goes through it).
            unsafe { MiMalloc.dealloc(ptr, layout) }
        }

        #[inline]
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: as in `dealloc`; the caller's guarantees on the sizes are passed on.
            unsafe { MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}
