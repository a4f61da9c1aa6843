//! The benches' global allocator: mimalloc, as the README's allocator tip recommends (glibc's
//! malloc hands the large temporaries of every training step back to the OS and page-faults them
//! in again). Build with `RUSTFLAGS="--cfg system_allocator"` to measure the system allocator
//! instead (docs/PERFORMANCE.md records both).
#[cfg(not(system_allocator))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
