//! PyTorch's default initialisation of convolution parameters, shared by the blocks that create
//! (or load) their own weights.

use candle_core::{Shape, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::check;
use crate::ops::ConvConfig;
use crate::{Error, Result};

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

/// Checks the parameters of a dense convolution layer ([`crate::conv::Conv2d`],
/// [`crate::conv::Conv3d`]): a valid config, a non-empty float weight `(Cout, Cin/groups, k…)`
/// with `spatial` kernel axes and `Cout` divisible by `groups`, and a `(Cout)` bias of the
/// weight's dtype and device. `Cin` is checked against the input at `forward`.
pub(crate) fn check_layer(
    block: &'static str,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: ConvConfig,
    spatial: usize,
) -> Result<()> {
    cfg.validate_for(block)?;
    let pattern = if spatial == 3 {
        "(Cout, Cin/groups, kd, kh, kw)"
    } else {
        "(Cout, Cin/groups, kh, kw)"
    };
    check::rank(block, "weight", weight, spatial + 2, pattern)?;
    check::non_empty(block, "weight", weight)?;
    // f64 2-D layers run candle's convolution (see `ops::conv2d`), for gradient checks.
    if !(spatial == 2 && weight.dtype() == candle_core::DType::F64) {
        check::float_dtype(block, "weight", weight)?;
    }
    let cout = weight.dim(0)?;
    if !cout.is_multiple_of(cfg.groups) {
        return Err(Error::config(
            block,
            format!(
                "output channels {cout} are not divisible by groups {}",
                cfg.groups
            ),
        ));
    }
    check::bias(block, weight, bias, cout)
}

/// Creates (or loads) the weight `(out_channels, in_channels/groups, k, …, k)` with `spatial`
/// kernel axes of size `kernel_size`, and the bias when `with_bias`, of a dense convolution
/// layer, after checking the sizes.
pub(crate) fn layer_params(
    block: &'static str,
    (in_channels, out_channels, kernel_size): (usize, usize, usize),
    spatial: usize,
    cfg: ConvConfig,
    vb: &VarBuilder,
    with_bias: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    cfg.validate_for(block)?;
    check::positive(block, "in_channels", in_channels)?;
    check::positive(block, "out_channels", out_channels)?;
    check::positive(block, "kernel_size", kernel_size)?;
    if !in_channels.is_multiple_of(cfg.groups) {
        return Err(Error::config(
            block,
            format!(
                "in_channels {in_channels} are not divisible by groups {}",
                cfg.groups
            ),
        ));
    }
    let mut shape = vec![out_channels, in_channels / cfg.groups];
    shape.extend(std::iter::repeat_n(kernel_size, spatial));
    weight_and_bias(block, vb, shape, with_bias)
}
