//! Bilinear resizing of NCHW maps with a backward pass: PyTorch's
//! `F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=…)`, up or down, any
//! ratio.
//!
//! # Shapes
//! - input $x$ `(B, C, H, W)` → output `(B, C, out_h, out_w)`; f32, f16 or bf16 (and f64).
//! - Output pixel $o$ of an axis of length $n$ resized to $m$ reads the source coordinate
//!   $s = o \cdot (n-1)/(m-1)$ with `align_corners` (corner pixel centres map onto each other), or
//!   $s = \max(0, (o + 1/2)\thinspace n/m - 1/2)$ without (pixels are areas; PyTorch's default),
//!   and mixes the two neighbours $\lfloor s \rfloor$ and $\lfloor s \rfloor + 1$ (clamped to the
//!   edge) with weights $1 - \lambda$ and $\lambda = s - \lfloor s \rfloor$.
//! - Downscaling samples the same way, without antialiasing (PyTorch's `antialias=False`).
//!
//! # Tip
//! Bilinear interpolation is linear and separable: $Y = A_h\thinspace X\thinspace A_w^\top$ for
//! every map $X$ of a channel, where $A_h$ `(out_h, H)` and $A_w$ `(out_w, W)` hold at most two
//! non-zero weights per row. This op builds those two small matrices on the host and applies them
//! as two matrix products, so the backward is the transposed products
//! $\partial L/\partial X = A_h^\top\thinspace G\thinspace A_w$ that candle's autograd already
//! knows, and the op runs on every device candle supports. candle's own
//! `Tensor::upsample_bilinear2d` has the forward only: its backward returns an error, so a
//! decoder built on it cannot train.
//!
//! The dense products do more arithmetic than a 4-tap kernel (about $H + W$ multiply-adds per
//! output value instead of 4), but on the maps where a decoder upsamples, $H, W \le 128$, that
//! is far less than the $9\thinspace C$ per value of the 3×3 convolution that follows, and the
//! products run on the tuned matrix-multiply kernels. f16 and bf16 inputs are computed in f32
//! and rounded once.
//!
//! # Example
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_tricks::ops::upsample_bilinear2d;
//! # fn main() -> candle_tricks::Result<()> {
//! let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 3, 5, 7), &Device::Cpu)?)?;
//! let y = upsample_bilinear2d(&x, 10, 14, false)?;
//! assert_eq!(y.dims(), &[2, 3, 10, 14]);
//! // Same values as candle's forward-only op ...
//! let c = x.upsample_bilinear2d(10, 14, false)?;
//! assert!((&y - &c)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
//! // ... and a gradient. Each input pixel's weights sum to (out_h / H) (out_w / W) = 4 when
//! // align_corners is false and the ratio is an integer, so d(sum y)/dx = 4 everywhere.
//! let grads = y.sum_all()?.backward()?;
//! let gx = grads.get(&x).expect("gradient wrt x").flatten_all()?.to_vec1::<f32>()?;
//! assert!(gx.iter().all(|g| (g - 4.0).abs() < 1e-5));
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - PyTorch, `torch.nn.functional.interpolate`,
//!   <https://pytorch.org/docs/stable/generated/torch.nn.functional.interpolate.html>
//! - Odena, Dumoulin, Olah, *Deconvolution and Checkerboard Artifacts*, 2016,
//!   <https://distill.pub/2016/deconv-checkerboard/>

use crate::cpu::try_zeros;
use crate::{check, Error, Result};
use candle_core::{DType, Device, Tensor};

const OP: &str = "upsample_bilinear2d";

/// Resizes `x` `(B, C, H, W)` to `(B, C, out_h, out_w)` by bilinear interpolation, with PyTorch's
/// `F.interpolate(mode="bilinear")` semantics for both values of `align_corners`, and a backward.
///
/// f64 is accepted too (computed in f64, for gradient checks). Errors (naming
/// `upsample_bilinear2d`) when `x` is not rank 4, has a zero dimension, is not a float dtype,
/// or when `out_h` or `out_w` is 0.
pub fn upsample_bilinear2d(
    x: &Tensor,
    out_h: usize,
    out_w: usize,
    align_corners: bool,
) -> Result<Tensor> {
    let (b, c, h, w) = validate(x, out_h, out_w, true)?;
    let dev = x.device();
    // f16 and bf16 (which candle's CPU matmul lacks) are computed in f32, f64 in f64.
    let dt = if x.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    if dev.is_cpu() {
        // The output comes from candle's matmul, which aborts when it cannot allocate.
        check::allocatable(OP, "output", &[b, c, out_h, out_w], dt)?;
    }
    let ah = matrix(h, out_h, align_corners, dev)?.to_dtype(dt)?; // (out_h, H)
    let awt = matrix(w, out_w, align_corners, dev)?.to_dtype(dt)?.t()?; // (W, out_w)
    let xf = x.to_dtype(dt)?;
    // Rows: (B·C·H, W) · (W, out_w).
    let t = xf.reshape((b * c * h, w))?.matmul(&awt)?;
    // Columns: A_h (out_h, H) · (H, out_w) for each of the B·C maps; the broadcast A_h has a
    // batch stride of 0, which candle's matmul accepts without a copy.
    let t = t.reshape((b * c, h, out_w))?;
    let y = ah.broadcast_left(b * c)?.matmul(&t)?;
    Ok(y.reshape((b, c, out_h, out_w))?.to_dtype(x.dtype())?)
}

/// Bilinear resizing written pixel by pixel (gather the four neighbours with `index_select` and
/// blend them), in any float dtype including f64. Slow, for tests.
pub fn upsample_bilinear2d_reference(
    x: &Tensor,
    out_h: usize,
    out_w: usize,
    align_corners: bool,
) -> Result<Tensor> {
    let (_, _, h, w) = validate(x, out_h, out_w, true)?;
    // candle's `index_select` refuses strided inputs (a transposed view would fail with a bare
    // candle error), so gather from a contiguous copy.
    let x = &x.contiguous()?;
    let dev = x.device();
    let axis = |n: usize, m: usize| -> Result<(Tensor, Tensor, Tensor)> {
        let taps: Vec<(u32, u32, f32)> = (0..m).map(|o| taps(n, m, o, align_corners)).collect();
        let i0: Vec<u32> = taps.iter().map(|t| t.0).collect();
        let i1: Vec<u32> = taps.iter().map(|t| t.1).collect();
        let l: Vec<f32> = taps.iter().map(|t| t.2).collect();
        Ok((
            Tensor::new(i0, dev)?,
            Tensor::new(i1, dev)?,
            Tensor::new(l, dev)?.to_dtype(x.dtype())?,
        ))
    };
    let (h0, h1, lh) = axis(h, out_h)?;
    let (w0, w1, lw) = axis(w, out_w)?;
    let lerp = |a: &Tensor, b: &Tensor, l: &Tensor| -> candle_core::Result<Tensor> {
        a + (b - a)?.broadcast_mul(l)?
    };
    let rows = |i: &Tensor| -> candle_core::Result<Tensor> {
        let r = x.index_select(i, 2)?;
        lerp(&r.index_select(&w0, 3)?, &r.index_select(&w1, 3)?, &lw)
    };
    let lh = lh.reshape((out_h, 1))?;
    Ok(lerp(&rows(&h0)?, &rows(&h1)?, &lh)?)
}

/// The two source indices and the weight of the second for output pixel `o` of an axis of
/// length `n` resized to `m`, computed in f32 as PyTorch's CPU kernel does.
fn taps(n: usize, m: usize, o: usize, align_corners: bool) -> (u32, u32, f32) {
    let src = if align_corners {
        let scale = if m > 1 {
            (n - 1) as f32 / (m - 1) as f32
        } else {
            0.0
        };
        scale * o as f32
    } else {
        let scale = n as f32 / m as f32;
        (scale * (o as f32 + 0.5) - 0.5).max(0.0)
    };
    let i0 = (src as usize).min(n - 1);
    let i1 = (i0 + 1).min(n - 1);
    (i0 as u32, i1 as u32, src - i0 as f32)
}

/// The `(m, n)` interpolation matrix of an axis of length `n` resized to `m`, in f32.
fn matrix(n: usize, m: usize, align_corners: bool, dev: &Device) -> Result<Tensor> {
    let mut a = try_zeros::<f32>(OP, m * n)?;
    for o in 0..m {
        let (i0, i1, l) = taps(n, m, o, align_corners);
        a[o * n + i0 as usize] += 1.0 - l;
        a[o * n + i1 as usize] += l;
    }
    Ok(Tensor::from_vec(a, (m, n), dev)?)
}

fn validate(
    x: &Tensor,
    out_h: usize,
    out_w: usize,
    allow_f64: bool,
) -> Result<(usize, usize, usize, usize)> {
    check::rank(OP, "input", x, 4, "(B, C, H, W)")?;
    check::non_empty(OP, "input", x)?;
    if !(allow_f64 && x.dtype() == DType::F64) {
        check::float_dtype(OP, "input", x)?;
    }
    if out_h == 0 || out_w == 0 {
        return Err(Error::config(
            OP,
            format!("output size must be > 0, got ({out_h}, {out_w})"),
        ));
    }
    let (b, c, h, w) = x.dims4()?;
    // Every buffer the two matrix products allocate: the output, the row-resized intermediate
    // and the two dense interpolation matrices, in the f32/f64 compute dtype.
    for (what, dims) in [
        ("output", [b, c, out_h, out_w]),
        ("row-resized intermediate", [b, c, h, out_w]),
        ("row interpolation matrix", [1, 1, out_h, h]),
        ("column interpolation matrix", [1, 1, out_w, w]),
    ] {
        check::numel(OP, what, &dims, DType::F64)?;
    }
    Ok((b, c, h, w))
}
