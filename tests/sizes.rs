//! Size arithmetic: huge padding, stride, dilation, kernel and output sizes are either computed
//! exactly (with memory bounded by the tensors, not by the stride or the padding) or rejected
//! with an error naming the block — never a panic, an abort or a wrapped-around number.
//!
//! Runs under a memory cap in CI: `(ulimit -v 4000000; cargo test --release --test sizes)`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::attention::{RotaryEmbedding, SinusoidalPositionalEncoding};
use candle_tricks::blocks::{DropPath, Dropout2d};
use candle_tricks::conv::receptive_field::{receptive_field, LayerGeometry};
use candle_tricks::conv::{aspp, extent, output_size, AsppConfig, Padding};
use candle_tricks::ops::{
    adaptive_pool2d, adaptive_pool2d_reference, conv3d, conv3d_reference, depthwise_conv1d,
    depthwise_conv1d_reference, depthwise_conv2d, depthwise_conv2d_reference, upsample_bilinear2d,
    upsample_bilinear2d_reference, Conv3dConfig, DepthwiseConv1dConfig, DepthwiseConv2dConfig,
    PoolMode,
};
use candle_tricks::pool::{max_pool2d_same, SpatialPyramidPooling};
use candle_tricks::Result;

const BIG: usize = 1 << 40;

/// Runs `f` catching panics; asserts it returned an error whose message names `block`.
fn expect_err<T: std::fmt::Debug>(block: &str, f: impl FnOnce() -> Result<T>) {
    match catch_unwind(AssertUnwindSafe(f)) {
        Err(_) => panic!("{block}: panicked instead of returning an error"),
        Ok(Ok(v)) => panic!("{block}: expected an error, got {v:?}"),
        Ok(Err(e)) => {
            let msg = e.to_string();
            assert!(msg.contains(block), "error does not name {block}: {msg}");
        }
    }
}

/// Runs `f` catching panics; asserts it succeeded.
fn expect_ok<T>(what: &str, f: impl FnOnce() -> Result<T>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Err(_) => panic!("{what}: panicked"),
        Ok(Err(e)) => panic!("{what}: unexpected error {e}"),
        Ok(Ok(v)) => v,
    }
}

fn seq(shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims());
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// A tensor claiming `dims` (whose product may overflow) as a broadcast view of one value.
fn broadcast(dims: &[usize]) -> Result<Tensor> {
    let one = Tensor::ones(vec![1; dims.len()], DType::F32, &Device::Cpu)?;
    Ok(one.broadcast_as(dims)?)
}

// ---------------------------------------------------------------------------------------------
// (a) Regressions, one per class
// ---------------------------------------------------------------------------------------------

#[test]
fn padding_arithmetic_reports_overflow() {
    let r = catch_unwind(|| {
        (
            Padding::Explicit(usize::MAX).output_size(5, 3, 1, 1),
            Padding::Same.output_size(5, 3, 1, usize::MAX),
            Padding::Valid.output_size(5, usize::MAX, 1, 2),
            output_size(5, 3, 1, 1, usize::MAX, 1),
            extent(usize::MAX, 3),
        )
    })
    .expect("padding arithmetic panicked");
    assert_eq!(r, (None, None, None, None, usize::MAX));
    // Huge but representable Same padding is exact.
    assert_eq!(Padding::Same.output_size(5, 3, 1, BIG), Some(5));
    assert_eq!(Padding::Same.resolve(5, 3, 1, BIG), (BIG, BIG));
}

#[test]
fn huge_explicit_padding_is_an_error() -> Result<()> {
    let x = seq(&[1, 2, 5, 5])?;
    let w = seq(&[2, 1, 3, 3])?;
    let cfg = DepthwiseConv2dConfig::default().with_padding(Padding::Explicit(usize::MAX / 2));
    expect_err("depthwise_conv2d", || depthwise_conv2d(&x, &w, cfg));
    expect_err("depthwise_conv2d", || {
        depthwise_conv2d_reference(&x, &w, cfg)
    });
    // Representable, but the output would be (2^41)^2 values.
    let cfg = cfg.with_padding(Padding::Explicit(BIG));
    expect_err("depthwise_conv2d", || depthwise_conv2d(&x, &w, cfg));
    let x1 = seq(&[1, 2, 5])?;
    let w1 = seq(&[2, 1, 3])?;
    let cfg1 = DepthwiseConv1dConfig::default().with_padding(Padding::Explicit(usize::MAX / 2));
    expect_err("depthwise_conv1d", || depthwise_conv1d(&x1, &w1, cfg1));
    let x3 = seq(&[1, 2, 3, 3, 3])?;
    let w3 = seq(&[2, 1, 3, 3, 3])?;
    let cfg3 = Conv3dConfig::default()
        .with_groups(2)
        .with_padding(Padding::Explicit(usize::MAX / 3));
    expect_err("conv3d", || conv3d(&x3, &w3, cfg3));
    Ok(())
}

#[test]
fn huge_dilation_overflowing_the_extent_is_an_error() -> Result<()> {
    let x = seq(&[1, 2, 5, 5])?;
    let w = seq(&[2, 1, 3, 3])?;
    for padding in [Padding::Same, Padding::Valid, Padding::Explicit(1)] {
        let cfg = DepthwiseConv2dConfig::default()
            .with_dilation(usize::MAX / 2 + 1)
            .with_padding(padding);
        expect_err("depthwise_conv2d", || depthwise_conv2d(&x, &w, cfg));
    }
    let x3 = seq(&[1, 1, 3, 3, 3])?;
    let w3 = seq(&[1, 1, 2, 2, 2])?;
    let cfg3 = Conv3dConfig::default().with_dilation(usize::MAX);
    expect_err("conv3d", || conv3d(&x3, &w3, cfg3));
    Ok(())
}

/// `x` (1, C, H, W) convolved by `w` (C, 1, kh, kw) straight from the definition, in i128.
fn naive_depthwise(
    x: &[f32],
    w: &[f32],
    (c, h, wd): (usize, usize, usize),
    (kh, kw): (usize, usize),
    (s, d): (usize, usize),
    (pt, pl): (usize, usize),
    (ho, wo): (usize, usize),
) -> Vec<f32> {
    let mut y = vec![0f32; c * ho * wo];
    for ch in 0..c {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = 0f32;
                for ky in 0..kh {
                    for kx in 0..kw {
                        let iy = (oy * s) as i128 + (ky * d) as i128 - pt as i128;
                        let ix = (ox * s) as i128 + (kx * d) as i128 - pl as i128;
                        if (0..h as i128).contains(&iy) && (0..wd as i128).contains(&ix) {
                            acc += w[(ch * kh + ky) * kw + kx]
                                * x[(ch * h + iy as usize) * wd + ix as usize];
                        }
                    }
                }
                y[(ch * ho + oy) * wo + ox] = acc;
            }
        }
    }
    y
}

#[test]
fn huge_stride_with_a_small_output_allocates_by_the_output() -> Result<()> {
    // A 1x1 output with a stride of 2^40: the padded, phased scratch plane would be 5·2^40 floats.
    let x = seq(&[1, 2, 5, 5])?;
    let w = seq(&[2, 1, 3, 3])?;
    for padding in [Padding::Valid, Padding::Same, Padding::Explicit(1)] {
        let cfg = DepthwiseConv2dConfig::default()
            .with_stride(BIG)
            .with_padding(padding);
        let y = expect_ok("depthwise_conv2d, stride 2^40", || {
            depthwise_conv2d(&x, &w, cfg)
        });
        assert_eq!(y.dims(), &[1, 2, 1, 1], "{padding:?}");
        let (pt, _) = padding.resolve(5, 3, BIG, 1);
        let want = naive_depthwise(
            &x.flatten_all()?.to_vec1()?,
            &w.flatten_all()?.to_vec1()?,
            (2, 5, 5),
            (3, 3),
            (BIG, 1),
            (pt, pt),
            (1, 1),
        );
        let got = y.flatten_all()?.to_vec1::<f32>()?;
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{padding:?}: {a} vs {b}");
        }
    }
    let x3 = seq(&[1, 2, 4, 4, 4])?;
    let w3 = seq(&[4, 1, 3, 3, 3])?;
    let cfg3 = Conv3dConfig::default().with_groups(2).with_stride(BIG);
    let y = expect_ok("conv3d, stride 2^40", || conv3d(&x3, &w3, cfg3));
    let r = conv3d_reference(&x3, &w3, cfg3.with_stride(4))?;
    assert!(max_diff(&y, &r)? < 1e-4);
    Ok(())
}

#[test]
fn huge_dilation_with_same_padding_works_like_pytorch() -> Result<()> {
    // Only the centre tap reaches the input: y = w[centre] · x, as in PyTorch.
    let x = seq(&[2, 3, 6, 5])?;
    let w = seq(&[3, 1, 3, 3])?;
    let cfg = DepthwiseConv2dConfig::default().with_dilation(BIG);
    let y = expect_ok("depthwise_conv2d, dilation 2^40", || {
        depthwise_conv2d(&x, &w, cfg)
    });
    let centre = w.narrow(2, 1, 1)?.narrow(3, 1, 1)?.reshape((1, 3, 1, 1))?;
    assert!(max_diff(&y, &x.broadcast_mul(&centre)?)? < 1e-5);
    // Its gradients, through the same path.
    let xv = Var::from_tensor(&x)?;
    let wv = Var::from_tensor(&w)?;
    let y = depthwise_conv2d(xv.as_tensor(), wv.as_tensor(), cfg)?;
    let grads = (y.sqr()?.sum_all()?).backward()?;
    let gx = grads.get(xv.as_tensor()).expect("grad x");
    let gw = grads.get(wv.as_tensor()).expect("grad w");
    let want_gx = x.broadcast_mul(&centre.sqr()?)?.affine(2.0, 0.0)?;
    assert!(max_diff(gx, &want_gx)? < 1e-4);
    let gw_centre = (x.sqr()?.sum_keepdim(3)?.sum_keepdim(2)?.sum_keepdim(0)?)
        .reshape((3,))?
        .broadcast_mul(&centre.flatten_all()?)?
        .affine(2.0, 0.0)?;
    let gw_got = gw.narrow(2, 1, 1)?.narrow(3, 1, 1)?.flatten_all()?;
    assert!(max_diff(&gw_got, &gw_centre)? < 1e-3);
    assert_eq!(
        gw.abs()?.sum_all()?.to_scalar::<f32>()?,
        gw_got.abs()?.sum_all()?.to_scalar::<f32>()?
    );
    // 1-D and 3-D.
    let x1 = seq(&[1, 2, 7])?;
    let w1 = seq(&[2, 1, 3])?;
    let y1 = expect_ok("depthwise_conv1d, dilation 2^40", || {
        depthwise_conv1d(
            &x1,
            &w1,
            DepthwiseConv1dConfig::default().with_dilation(BIG),
        )
    });
    let c1 = w1.narrow(2, 1, 1)?.reshape((1, 2, 1))?;
    assert!(max_diff(&y1, &x1.broadcast_mul(&c1)?)? < 1e-5);
    let x3 = seq(&[1, 1, 3, 4, 5])?;
    let w3 = seq(&[1, 1, 3, 3, 3])?;
    let y3 = expect_ok("conv3d, dilation 2^40", || {
        conv3d(&x3, &w3, Conv3dConfig::default().with_dilation(BIG))
    });
    let c3 = w3.narrow(2, 1, 1)?.narrow(3, 1, 1)?.narrow(4, 1, 1)?;
    assert!(max_diff(&y3, &x3.broadcast_mul(&c3)?)? < 1e-5);
    Ok(())
}

#[test]
fn aspp_with_a_rate_beyond_the_map_is_its_centre_tap() -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = AsppConfig::default()
        .with_rates(vec![BIG])
        .with_image_pooling(false);
    let block = expect_ok("Aspp rate 2^40", || aspp(3, 4, cfg.clone(), vb.clone()));
    let x = seq(&[2, 3, 5, 5])?;
    let y = expect_ok("Aspp forward, rate 2^40", || {
        Ok(candle_core::ModuleT::forward_t(&block, &x, false)?)
    });
    // The same weights at rate 5 (>= the map: only the centre tap reads it).
    let same = aspp(3, 4, cfg.with_rates(vec![5]), vb)?;
    let r = candle_core::ModuleT::forward_t(&same, &x, false)?;
    assert!(max_diff(&y, &r)? < 1e-5);
    // And rate 5 through candle's padded convolution gives the same as the centre tap.
    let w = seq(&[4, 3, 3, 3])?;
    let full = x.conv2d(&w, 5, 1, 5, 1)?;
    let centre = x.conv2d(
        &w.narrow(2, 1, 1)?.narrow(3, 1, 1)?.contiguous()?,
        0,
        1,
        1,
        1,
    )?;
    assert!(max_diff(&full, &centre)? < 1e-5);
    expect_err("Aspp", || {
        aspp(
            3,
            4,
            AsppConfig::default().with_rates(vec![usize::MAX]),
            VarBuilder::zeros(DType::F32, &Device::Cpu),
        )
    });
    Ok(())
}

#[test]
fn receptive_field_overflow_is_an_error() {
    // 64 stride-2 layers: the jump is 2^64.
    let stack = vec![LayerGeometry::conv(3, 2); 64];
    expect_err("receptive_field", || receptive_field(&stack));
    expect_err("receptive_field", || {
        receptive_field(&[LayerGeometry::conv(3, 1).with_dilation(usize::MAX)])
    });
    expect_err("receptive_field", || {
        receptive_field(&[LayerGeometry::conv(1, BIG), LayerGeometry::conv(BIG, 1)])
    });
    // Just below the limit it is exact.
    let rf = receptive_field(&[LayerGeometry::conv(1, 2); 63]).expect("2^63 jump");
    assert_eq!(rf.jump, 1 << 63);
}

#[test]
fn dropout_masks_of_overflowing_shapes_are_errors() -> Result<()> {
    // The product of these dimensions is 2^64: it wraps to 0 elements.
    let x = broadcast(&[1 << 32, 1 << 32, 1, 1])?;
    let d2 = Dropout2d::new(0.5)?;
    expect_err("Dropout2d", || d2.apply(&x, true));
    let dp = DropPath::new(0.5)?;
    expect_err("DropPath", || dp.apply(&x, true));
    let x = broadcast(&[1 << 20, 1 << 20, 1 << 20, 1 << 20])?;
    expect_err("Dropout2d", || d2.apply(&x, true));
    expect_err("DropPath", || dp.apply(&x, true));
    Ok(())
}

#[test]
fn huge_output_sizes_are_errors() -> Result<()> {
    let x = seq(&[1, 2, 4, 4])?;
    expect_err("adaptive_avg_pool2d", || {
        adaptive_pool2d(&x, (BIG, BIG), PoolMode::Avg)
    });
    expect_err("adaptive_max_pool2d", || {
        adaptive_pool2d(&x, (usize::MAX, 2), PoolMode::Max)
    });
    expect_err("adaptive_avg_pool2d", || {
        adaptive_pool2d_reference(&x, (BIG, BIG), PoolMode::Avg)
    });
    expect_err("upsample_bilinear2d", || {
        upsample_bilinear2d(&x, BIG, BIG, false)
    });
    expect_err("upsample_bilinear2d", || {
        upsample_bilinear2d(&x, usize::MAX, 1, true)
    });
    expect_err("upsample_bilinear2d", || {
        upsample_bilinear2d_reference(&x, BIG, BIG, false)
    });
    expect_err("SpatialPyramidPooling", || {
        SpatialPyramidPooling::new(vec![6, 1 << 33], PoolMode::Max)
    });
    expect_err("SinusoidalPositionalEncoding", || {
        SinusoidalPositionalEncoding::new(BIG, BIG, DType::F32, &Device::Cpu)
    });
    expect_err("RotaryEmbedding", || {
        RotaryEmbedding::new(BIG, BIG, 10000.0, DType::F32, &Device::Cpu)
    });
    Ok(())
}

#[test]
fn huge_same_pool_kernel_is_the_global_max() -> Result<()> {
    let x = seq(&[1, 2, 4, 5])?;
    let y = expect_ok("max_pool2d_same, k = usize::MAX", || {
        max_pool2d_same(&x, usize::MAX)
    });
    let m = x.max_keepdim(3)?.max_keepdim(2)?.broadcast_as(x.shape())?;
    assert!(max_diff(&y, &m)? == 0.0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (b) Seeded random geometries
// ---------------------------------------------------------------------------------------------

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Mostly small, sometimes huge (a stride, dilation or padding).
    fn size(&mut self, small: usize) -> usize {
        match self.below(10) {
            0 => 1 << (20 + self.below(44)),
            1 => usize::MAX - self.below(3),
            2 => 50 + self.below(300),
            _ => 1 + self.below(small),
        }
    }
    fn padding(&mut self) -> Padding {
        match self.below(3) {
            0 => Padding::Same,
            1 => Padding::Valid,
            _ => Padding::Explicit(if self.below(4) == 0 {
                self.size(3)
            } else {
                self.below(4)
            }),
        }
    }
}

/// PyTorch's output length, in u128: floor((n + pb + pa − d(k−1) − 1)/s) + 1, or None.
fn torch_len(n: usize, k: usize, s: usize, d: usize, p: Padding) -> Option<(usize, usize)> {
    let (n, k, s, d) = (n as u128, k as u128, s as u128, d as u128);
    let e = d * (k - 1) + 1;
    let (pb, pa) = match p {
        Padding::Valid => (0, 0),
        Padding::Explicit(p) => (p as u128, p as u128),
        Padding::Same => {
            let total = ((n.div_ceil(s) - 1) * s + e).saturating_sub(n);
            (total / 2, total - total / 2)
        }
    };
    let padded = n + pb + pa;
    if padded < e {
        return None;
    }
    let out = (padded - e) / s + 1;
    if let Padding::Same = p {
        assert_eq!(out, n.div_ceil(s));
    }
    // Values beyond usize (the padding or the padded length) must be errors.
    if pb > usize::MAX as u128 || pa > usize::MAX as u128 || padded > usize::MAX as u128 {
        return None;
    }
    Some((out as usize, pb as usize))
}

/// What an op must do with an output of `elems` f32 values: compute it (small), refuse it (more
/// than 2^47 bytes, or overflowing), or — in between — nothing this test can check without
/// allocating it for real (`None`: the case is skipped).
fn output_fate(elems: Option<u128>) -> Option<bool> {
    match elems {
        None => Some(false),
        Some(n) if n < 1 << 16 => Some(true),
        Some(n) if n.saturating_mul(4) > 1 << 47 => Some(false),
        Some(_) => None,
    }
}

/// Small enough for candle's reference (which pads the input explicitly).
fn cheap(n: usize, pb: usize, k: usize, d: usize, s: usize) -> bool {
    (n as u128 + 2 * pb as u128) < 400 && (d as u128) * (k as u128) < 400 && s < 400
}

#[test]
fn random_depthwise2d_geometries() -> Result<()> {
    let mut rng = Rng(0x5eed_0001);
    let (mut ok, mut err) = (0, 0);
    for case in 0..300 {
        let (h, w) = (1 + rng.below(7), 1 + rng.below(7));
        let (kh, kw) = (1 + rng.below(4), 1 + rng.below(4));
        let c = 1 + rng.below(2);
        let (s, d, p) = (rng.size(3), rng.size(3), rng.padding());
        let cfg = DepthwiseConv2dConfig::default()
            .with_stride(s)
            .with_dilation(d)
            .with_padding(p);
        let x = seq(&[1, c, h, w])?;
        let wt = seq(&[c, 1, kh, kw])?;
        let tag = format!("case {case}: x {h}x{w} k {kh}x{kw} s {s} d {d} {p:?}");
        let want = torch_len(h, kh, s, d, p).zip(torch_len(w, kw, s, d, p));
        let elems = want.map(|((ho, _), (wo, _))| c as u128 * ho as u128 * wo as u128);
        // Outputs too large to hold are errors too.
        let want = match output_fate(elems) {
            None => continue,
            Some(ok) => want.filter(|_| ok),
        };
        let got = catch_unwind(AssertUnwindSafe(|| depthwise_conv2d(&x, &wt, cfg)))
            .unwrap_or_else(|_| panic!("{tag}: panicked"));
        match (got, want) {
            (Err(e), None) => {
                assert!(e.to_string().contains("depthwise_conv2d"), "{tag}: {e}");
                err += 1;
            }
            (Ok(y), Some(((ho, pt), (wo, pl)))) => {
                assert_eq!(y.dims(), &[1, c, ho, wo], "{tag}");
                let naive = naive_depthwise(
                    &x.flatten_all()?.to_vec1()?,
                    &wt.flatten_all()?.to_vec1()?,
                    (c, h, w),
                    (kh, kw),
                    (s, d),
                    (pt, pl),
                    (ho, wo),
                );
                let y = y.flatten_all()?.to_vec1::<f32>()?;
                for (a, b) in y.iter().zip(&naive) {
                    assert!((a - b).abs() < 1e-4, "{tag}: {a} vs {b}");
                }
                if cheap(h.max(w), pt.max(pl), kh.max(kw), d, s) {
                    let r = depthwise_conv2d_reference(&x, &wt, cfg)?;
                    let y = Tensor::from_vec(y, (1, c, ho, wo), &Device::Cpu)?;
                    assert!(max_diff(&y, &r)? < 1e-4, "{tag}");
                }
                ok += 1;
            }
            (got, want) => panic!("{tag}: got {got:?}, PyTorch's formula says {want:?}"),
        }
    }
    assert!(ok > 100 && err > 20, "ok {ok}, err {err}");
    Ok(())
}

#[test]
fn random_depthwise1d_geometries_and_gradients() -> Result<()> {
    let mut rng = Rng(0x5eed_0002);
    for case in 0..300 {
        let l = 1 + rng.below(9);
        let k = 1 + rng.below(5);
        let (s, d, p) = (rng.size(3), rng.size(3), rng.padding());
        let cfg = DepthwiseConv1dConfig::default()
            .with_stride(s)
            .with_dilation(d)
            .with_padding(p);
        let x = seq(&[2, 2, l])?;
        let wt = seq(&[2, 1, k])?;
        let tag = format!("case {case}: L {l} k {k} s {s} d {d} {p:?}");
        let want = torch_len(l, k, s, d, p);
        let want = match output_fate(want.map(|(lo, _)| 8 * lo as u128)) {
            None => continue,
            Some(ok) => want.filter(|_| ok),
        };
        let got = catch_unwind(AssertUnwindSafe(|| depthwise_conv1d(&x, &wt, cfg)))
            .unwrap_or_else(|_| panic!("{tag}: panicked"));
        match (got, want) {
            (Err(e), None) => assert!(e.to_string().contains("depthwise_conv1d"), "{tag}: {e}"),
            (Ok(y), Some((lo, pb))) => {
                assert_eq!(y.dims(), &[2, 2, lo], "{tag}");
                if !cheap(l, pb, k, d, s) {
                    continue;
                }
                let r = depthwise_conv1d_reference(&x, &wt, cfg)?;
                assert!(max_diff(&y, &r)? < 1e-4, "{tag}");
                // Gradients of both against candle's autograd through the reference.
                let (xv, wv) = (Var::from_tensor(&x)?, Var::from_tensor(&wt)?);
                let g1 = depthwise_conv1d(xv.as_tensor(), wv.as_tensor(), cfg)?
                    .sqr()?
                    .sum_all()?
                    .backward()?;
                let g2 = depthwise_conv1d_reference(xv.as_tensor(), wv.as_tensor(), cfg)?
                    .sqr()?
                    .sum_all()?
                    .backward()?;
                for v in [&xv, &wv] {
                    let (a, b) = (g1.get(v).expect("grad"), g2.get(v).expect("grad"));
                    assert!(max_diff(a, b)? < 1e-3, "{tag}: {a} vs {b}");
                }
            }
            (got, want) => panic!("{tag}: got {got:?}, PyTorch's formula says {want:?}"),
        }
    }
    Ok(())
}

#[test]
fn random_conv3d_geometries() -> Result<()> {
    let mut rng = Rng(0x5eed_0003);
    for case in 0..200 {
        let n = [1 + rng.below(4), 1 + rng.below(4), 1 + rng.below(5)];
        let k = [1 + rng.below(3), 1 + rng.below(3), 1 + rng.below(3)];
        let groups = 1 + rng.below(2);
        let (s, d, p) = (rng.size(2), rng.size(2), rng.padding());
        let cfg = Conv3dConfig::default()
            .with_stride(s)
            .with_dilation(d)
            .with_padding(p)
            .with_groups(groups);
        let x = seq(&[1, 2, n[0], n[1], n[2]])?;
        let wt = seq(&[2, 2 / groups, k[0], k[1], k[2]])?;
        let tag = format!("case {case}: x {n:?} k {k:?} s {s} d {d} {p:?} groups {groups}");
        let want: Option<Vec<(usize, usize)>> =
            (0..3).map(|a| torch_len(n[a], k[a], s, d, p)).collect();
        let elems = want.as_ref().and_then(|o| {
            o.iter()
                .try_fold(2u128, |acc, x| acc.checked_mul(x.0 as u128))
        });
        let want = match (want.is_some(), output_fate(elems)) {
            (_, None) => continue,
            (false, _) => None,
            (true, Some(ok)) => want.filter(|_| ok),
        };
        let got = catch_unwind(AssertUnwindSafe(|| conv3d(&x, &wt, cfg)))
            .unwrap_or_else(|_| panic!("{tag}: panicked"));
        match (got, want) {
            (Err(e), None) => assert!(e.to_string().contains("conv3d"), "{tag}: {e}"),
            (Ok(y), Some(o)) => {
                assert_eq!(y.dims(), &[1, 2, o[0].0, o[1].0, o[2].0], "{tag}");
                let pb = o.iter().map(|x| x.1).max().unwrap_or(0);
                let big = *n.iter().max().unwrap_or(&1);
                if cheap(big, pb, 3, d, s) {
                    let r = conv3d_reference(&x, &wt, cfg)?;
                    assert!(max_diff(&y, &r)? < 1e-3, "{tag}");
                }
            }
            (got, want) => panic!("{tag}: got {got:?}, PyTorch's formula says {want:?}"),
        }
    }
    Ok(())
}

#[test]
fn random_adaptive_pool_and_upsample_sizes() -> Result<()> {
    let mut rng = Rng(0x5eed_0004);
    for case in 0..200 {
        let (h, w) = (1 + rng.below(9), 1 + rng.below(9));
        let x = seq(&[1, 2, h, w])?;
        let (oh, ow) = (rng.size(12), rng.size(12));
        let tag = format!("case {case}: {h}x{w} -> {oh}x{ow}");
        let small = (oh as u128) * (ow as u128) < 1 << 12;
        if !small && (oh as u128) * (ow as u128) <= 1 << 50 {
            // Representable: only an allocation would tell (see `output_fate`).
            continue;
        }
        for mode in [PoolMode::Avg, PoolMode::Max] {
            let got = catch_unwind(AssertUnwindSafe(|| adaptive_pool2d(&x, (oh, ow), mode)))
                .unwrap_or_else(|_| panic!("{tag}: panicked"));
            match got {
                Ok(y) => {
                    assert_eq!(y.dims(), &[1, 2, oh, ow], "{tag}");
                    if small {
                        let r = adaptive_pool2d_reference(&x, (oh, ow), mode)?;
                        assert!(max_diff(&y, &r)? < 1e-5, "{tag}");
                    }
                }
                Err(e) => {
                    assert!(!small, "{tag}: {e}");
                    assert!(e.to_string().contains("adaptive_"), "{tag}: {e}");
                }
            }
        }
        let align = rng.below(2) == 0;
        {
            let got = catch_unwind(AssertUnwindSafe(|| upsample_bilinear2d(&x, oh, ow, align)))
                .unwrap_or_else(|_| panic!("{tag}: panicked"));
            match got {
                Ok(y) => {
                    assert!(small, "{tag}");
                    let r = upsample_bilinear2d_reference(&x, oh, ow, align)?;
                    assert!(max_diff(&y, &r)? < 1e-4, "{tag}");
                }
                Err(e) => {
                    assert!(!small, "{tag}: {e}");
                    assert!(e.to_string().contains("upsample_bilinear2d"), "{tag}: {e}");
                }
            }
        }
    }
    Ok(())
}

/// Outputs that are representable (under the 2^47-byte cap) but cannot be allocated on this
/// machine are an error from the allocator, never an abort: a 2^19 × 2^19 pooled or upsampled
/// map is 1 TiB in f32, a depthwise output with 2^18 padding on each side 1 TiB too.
#[test]
fn unallocatable_outputs_are_errors_not_aborts() -> Result<()> {
    let x = seq(&[1, 1, 4, 4])?;
    let big = 1 << 19;
    expect_err("adaptive_pool", || {
        adaptive_pool2d(&x, (big, big), PoolMode::Avg)
    });
    expect_err("upsample_bilinear2d", || {
        upsample_bilinear2d(&x, big, big, false)
    });
    let w = seq(&[1, 1, 1, 1])?;
    let cfg = DepthwiseConv2dConfig::default().with_padding(Padding::Explicit(1 << 18));
    expect_err("depthwise_conv", || depthwise_conv2d(&x, &w, cfg));
    let x3 = seq(&[1, 1, 2, 2, 2])?;
    let w3 = seq(&[1, 1, 1, 1, 1])?;
    let cfg3 = Conv3dConfig::default().with_padding(Padding::Explicit(1 << 13));
    expect_err("conv3d", || conv3d(&x3, &w3, cfg3));
    expect_err("attention_dropout_keep", || {
        candle_tricks::ops::attention_dropout_keep((1, 1, 1 << 20, 1 << 20), 0.1, 7)
    });
    Ok(())
}
