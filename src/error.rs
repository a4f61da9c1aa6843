//! The crate's error type.
//!
//! Every constructor and op validates its input and returns [`Error`] naming the block, what it
//! expected and what it got, so a bad shape surfaces as a readable message instead of a panic deep
//! inside a kernel.
//!
//! # Getting the typed error back through candle
//! `Module::forward`, `ModuleT::forward_t` and `Optimizer::step` must return
//! `candle_core::Result`, so there [`Error`] travels inside a [`candle_core::Error`] (a candle
//! error passes through unchanged). Nothing is lost: [`Error::from_candle`] finds it again
//! (through candle's context and backtrace wrappers), and converting the candle error back with
//! `?` or `From` inside a function returning [`crate::Result`] unwraps it as well.
//!
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use candle_nn::VarBuilder;
//! use candle_tricks::norm::{batch_norm, BatchNormConfig};
//! use candle_tricks::Error;
//! # fn main() -> candle_tricks::Result<()> {
//! let bn = batch_norm(3, BatchNormConfig::default(), VarBuilder::zeros(DType::F32, &Device::Cpu))?;
//! let x = Tensor::zeros((2, 4, 5), DType::F32, &Device::Cpu)?; // 4 channels, not 3
//! let e: candle_core::Error = bn.forward_t(&x, true).unwrap_err(); // through candle's trait
//! assert!(matches!(
//!     Error::from_candle(&e),
//!     Some(Error::ShapeMismatch { block: "BatchNorm", what: "input", .. })
//! ));
//! let ours = Error::from(e); // or `?` in a function returning candle_tricks::Result
//! assert!(matches!(ours, Error::ShapeMismatch { .. }));
//! # Ok(())
//! # }
//! ```
//!
//! `Debug` prints the same readable message as `Display`, so `fn main() -> candle_tricks::Result<()>`
//! and `unwrap` show it as it is.

use std::fmt;

use candle_core::{DType, Shape};

/// Errors returned by candle-tricks blocks, ops and configs.
#[derive(thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range or inconsistent (stride 0, negative eps, …).
    #[error("{block}: invalid config: {msg}")]
    InvalidConfig {
        /// The block or op that rejected the value.
        block: &'static str,
        /// What is wrong, with the offending value.
        msg: String,
    },

    /// A tensor does not have the shape the block needs.
    #[error("{block}: shape mismatch for {what}: expected {expected}, got {actual:?}")]
    ShapeMismatch {
        /// The block or op that rejected the tensor.
        block: &'static str,
        /// Which argument (`"input"`, `"weight"`, …).
        what: &'static str,
        /// The expected shape, as a readable pattern such as `(B, C, H, W)` or `(64, 1, 3, 3)`.
        expected: String,
        /// The shape that was passed.
        actual: Shape,
    },

    /// Two tensors that must share a dtype do not, or the dtype is not supported.
    #[error("{block}: dtype mismatch for {what}: expected {expected:?}, got {actual:?}")]
    DTypeMismatch {
        /// The block or op that rejected the tensor.
        block: &'static str,
        /// Which argument.
        what: &'static str,
        /// The dtype that was expected.
        expected: DType,
        /// The dtype that was passed.
        actual: DType,
    },

    /// A tensor's dtype is not one the block supports (an integer input, f64 where the kernel
    /// runs f32 / f16 / bf16, …).
    #[error("{block}: unsupported dtype for {what}: expected {supported}, got {actual:?}")]
    UnsupportedDType {
        /// The block or op that rejected the tensor.
        block: &'static str,
        /// Which argument.
        what: String,
        /// The dtypes the block accepts, in words (`"f32, f16 or bf16"`).
        supported: &'static str,
        /// The dtype that was passed.
        actual: DType,
    },

    /// Two tensors that must live on the same device do not.
    #[error("{block}: device mismatch for {what}: expected {expected}, got {actual}")]
    DeviceMismatch {
        /// The block or op that rejected the tensor.
        block: &'static str,
        /// Which argument.
        what: &'static str,
        /// The expected device.
        expected: String,
        /// The device that was passed.
        actual: String,
    },

    /// A tensor holds NaN or ±Inf where the block needs finite values (an input checked by an
    /// op's `checked` mode, a gradient before an optimizer step, a loaded state). Distinct from
    /// [`Error::InvalidConfig`]: the configuration is fine, the numbers are not.
    #[error("{block}: non-finite values (NaN or Inf) in {what}")]
    NonFinite {
        /// The block or op that found the values.
        block: &'static str,
        /// Which tensor or value, e.g. `"gradient of parameter 3"` or `"input u"`.
        what: String,
    },

    /// Weights could not be created or loaded from a `VarBuilder` (a tensor missing from a
    /// checkpoint, or of the wrong shape or dtype): names the block and the prefix it loads
    /// under.
    #[error("{block}: cannot load weights under `{prefix}`: {source}")]
    Load {
        /// The block being built.
        block: &'static str,
        /// The `VarBuilder` prefix of the block (`layer1.0.bn1`, …).
        prefix: String,
        /// candle's error, which names the tensor (boxed: keeps `Result`s small).
        source: Box<candle_core::Error>,
    },

    /// An error raised by candle itself.
    #[error(transparent)]
    Candle(candle_core::Error),
}

impl fmt::Debug for Error {
    /// The readable message, as `Display` (what `unwrap` and `main` print).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The context string of the candle error that carries an [`Error`].
const CARRIER: &str = "candle_tricks::Error";

impl From<candle_core::Error> for Error {
    /// Unwraps an [`Error`] that travelled through candle (see the module docs); wraps any other
    /// candle error as [`Error::Candle`].
    fn from(e: candle_core::Error) -> Self {
        match e {
            candle_core::Error::WrappedContext { wrapped, context } => {
                match wrapped.downcast::<Error>() {
                    Ok(ours) => *ours,
                    Err(wrapped) => {
                        Error::Candle(candle_core::Error::WrappedContext { wrapped, context })
                    }
                }
            }
            other => Error::Candle(other),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for candle_core::Error {
    /// A candle error passes through unchanged; ours is carried as a `std::error::Error` (candle's
    /// `WrappedContext`), so [`Error::from_candle`] can find it again.
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(inner) => inner,
            other => candle_core::Error::WrappedContext {
                wrapped: Box::new(other),
                context: CARRIER.to_string(),
            },
        }
    }
}

impl Error {
    /// The [`Error`] that a candle error carries, if any: looks through candle's context, path
    /// and backtrace wrappers (see the module docs).
    pub fn from_candle(e: &candle_core::Error) -> Option<&Error> {
        match e {
            candle_core::Error::WrappedContext { wrapped, .. } => wrapped.downcast_ref::<Error>(),
            candle_core::Error::Context { inner, .. }
            | candle_core::Error::WithPath { inner, .. }
            | candle_core::Error::WithBacktrace { inner, .. } => Error::from_candle(inner),
            _ => None,
        }
    }

    /// Turns a candle error raised while building `block` from a `VarBuilder` under `prefix`
    /// into [`Error::Load`]; the crate's own errors pass unchanged.
    pub(crate) fn in_load(self, block: &'static str, prefix: impl Into<String>) -> Self {
        match self {
            Error::Candle(source) => Error::Load {
                block,
                prefix: prefix.into(),
                source: Box::new(source),
            },
            other => other,
        }
    }

    /// Shorthand for [`Error::InvalidConfig`].
    pub fn config(block: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidConfig {
            block,
            msg: msg.into(),
        }
    }

    /// Shorthand for [`Error::UnsupportedDType`].
    pub fn unsupported_dtype(
        block: &'static str,
        what: impl Into<String>,
        supported: &'static str,
        actual: DType,
    ) -> Self {
        Error::UnsupportedDType {
            block,
            what: what.into(),
            supported,
            actual,
        }
    }

    /// Shorthand for [`Error::NonFinite`].
    pub fn non_finite(block: &'static str, what: impl Into<String>) -> Self {
        Error::NonFinite {
            block,
            what: what.into(),
        }
    }

    /// Shorthand for [`Error::ShapeMismatch`].
    pub fn shape(
        block: &'static str,
        what: &'static str,
        expected: impl Into<String>,
        actual: impl Into<Shape>,
    ) -> Self {
        Error::ShapeMismatch {
            block,
            what,
            expected: expected.into(),
            actual: actual.into(),
        }
    }
}
