//! The per-channel tensors of the norm layers, `weight` and `bias` (the affine map) and
//! `running_mean` and `running_var`: checked when given and loaded from a `VarBuilder` the same
//! way for every layer.

use crate::{check, Error, Result};
use candle_core::{DType, Tensor};
use candle_nn::{Init, VarBuilder};

/// One pair of per-channel tensors: PyTorch's names and initial values.
pub(crate) type Pair = [(&'static str, f64); 2];

/// The learned scale and shift.
pub(crate) const AFFINE: Pair = [("weight", 1.0), ("bias", 0.0)];
/// The running statistics.
pub(crate) const RUNNING: Pair = [("running_mean", 0.0), ("running_var", 1.0)];

/// Checks the pair `tensors` of `block` over `n` channels: each present exactly when `want`
/// says, shaped `(n)`, of a float dtype (f64 too when `f64_ok`: layers whose forward is a
/// composition), and both of one dtype and device.
pub(crate) fn check_pair(
    block: &'static str,
    n: usize,
    tensors: [Option<&Tensor>; 2],
    want: [bool; 2],
    pair: Pair,
    f64_ok: bool,
) -> Result<()> {
    for ((t, want), (name, _)) in tensors.into_iter().zip(want).zip(pair) {
        match (t, want) {
            (Some(t), true) => {
                if !(f64_ok && t.dtype() == DType::F64) {
                    check::float_dtype(block, name, t)?;
                }
                if t.dims() != [n] {
                    return Err(Error::shape(
                        block,
                        name,
                        format!("({n})"),
                        t.shape().clone(),
                    ));
                }
            }
            (None, false) => {}
            (Some(_), false) => {
                let msg = format!("got a {name} but the config has none");
                return Err(Error::config(block, msg));
            }
            (None, true) => {
                let msg = format!("the config needs a {name}, got none");
                return Err(Error::config(block, msg));
            }
        }
    }
    if let [Some(a), Some(b)] = tensors {
        check::same_dtype_device(block, pair[1].0, a, b)?;
    }
    Ok(())
}

/// Loads the `(n)` tensors of `pair` that `want` asks for from `vb`, under PyTorch's names
/// and with their initial values (where `vb` creates them).
pub(crate) fn load_pair(
    block: &'static str,
    n: usize,
    vb: &VarBuilder,
    want: [bool; 2],
    pair: Pair,
) -> Result<[Option<Tensor>; 2]> {
    let load = |i: usize| -> Result<Option<Tensor>> {
        let (name, init) = pair[i];
        match want[i] {
            true => Ok(Some(check::param(block, vb, n, name, Init::Const(init))?)),
            false => Ok(None),
        }
    };
    Ok([load(0)?, load(1)?])
}
