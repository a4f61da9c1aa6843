//! Pooling layers.

mod adaptive;
mod spp;
