//! PyTorch's default initialisation of convolution parameters, shared by the blocks that create
//! (or load) their own weights.

use candle_core::{Shape, Tensor};
use candle_nn::{Init, VarBuilder};

/// PyTorch's default for convolution weights and biases: kaiming-uniform with $a = \sqrt 5$,
/// which is the uniform distribution on $\pm 1/\sqrt{fan_{in}}$.
pub(crate) fn kaiming_uniform(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// Creates (or loads) the `weight` of `shape` (PyTorch's `(Cout, Cin/groups, k…)` layout) and,
/// when `with_bias`, the `(Cout)` `bias` under `vb`, both drawn from [`kaiming_uniform`] with
/// `fan_in` the product of the weight's dimensions after the first, as PyTorch does.
pub(crate) fn weight_and_bias(
    block: &'static str,
    vb: &VarBuilder,
    shape: impl Into<Shape>,
    with_bias: bool,
) -> crate::Result<(Tensor, Option<Tensor>)> {
    let shape = shape.into();
    let dims = shape.dims();
    let cout = dims.first().copied().unwrap_or(1);
    let init = kaiming_uniform(dims.iter().skip(1).product());
    let weight = crate::check::param(block, vb, shape.clone(), "weight", init)?;
    let bias = if with_bias {
        Some(crate::check::param(block, vb, cout, "bias", init)?)
    } else {
        None
    };
    Ok((weight, bias))
}
