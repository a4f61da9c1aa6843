//! The crate's error type.
//!
//! Every constructor and op validates its input and returns [`Error`] naming the block, what it
//! expected and what it got, so a bad shape surfaces as a readable message instead of a panic deep
//! inside a kernel. `Module::forward` must return `candle_core::Result`, so [`Error`] converts into
//! [`candle_core::Error`] (a candle error passes through unchanged).

use candle_core::{DType, Shape};

/// Errors returned by candle-tricks blocks, ops and configs.
#[derive(Debug, thiserror::Error)]
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

    /// An error raised by candle itself.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(inner) => inner,
            other => candle_core::Error::wrap(other),
        }
    }
}

impl Error {
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
