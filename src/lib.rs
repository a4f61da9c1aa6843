//! candle-tricks
#![deny(missing_docs)]

mod check;
mod error;
pub use error::{Error, Result};

pub mod conv;
pub mod ops;
pub mod pool;
