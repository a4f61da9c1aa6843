//! U-Net blocks: shapes with odd sizes in both upsampling modes, tensor names, gradient flow
//! against finite differences, the 1×1-conv-before-resize identity, and bad input.

mod common;

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{Conv2d, VarBuilder, VarMap};
use candle_tricks::blocks::{
    down_block, up_block, DownBlock, DownBlockConfig, UpBlock, UpBlockConfig, UpMode,
};
use candle_tricks::ops::upsample_bilinear2d;
use common::*;

fn vb(map: &VarMap) -> VarBuilder<'static> {
    VarBuilder::from_varmap(map, DType::F32, &Device::Cpu)
}

/// A 3-level U-Net (encoder widths 4, 8, 16) with `mode` and `norm`.
struct Net {
    down: [DownBlock; 3],
    up: [UpBlock; 2],
}

impl Net {
    fn new(mode: UpMode, norm: &str, vb: VarBuilder) -> R<Self> {
        let d = |i, o, pool, n: &str| {
            let cfg = DownBlockConfig::default()
                .with_downsample(pool)
                .with_norm(norm);
            down_block(i, o, cfg, vb.pp(n))
        };
        let u = |i, s, o, n: &str| {
            let cfg = UpBlockConfig::default().with_mode(mode).with_norm(norm);
            up_block(i, s, o, cfg, vb.pp(n))
        };
        Ok(Self {
            down: [
                d(2, 4, false, "d1")?,
                d(4, 8, true, "d2")?,
                d(8, 16, true, "d3")?,
            ],
            up: [u(16, 8, 8, "u2")?, u(8, 4, 4, "u1")?],
        })
    }

    fn forward(&self, x: &Tensor) -> candle_tricks::Result<Tensor> {
        let s1 = self.down[0].forward_t(x, true)?;
        let s2 = self.down[1].forward_t(&s1, true)?;
        let h = self.down[2].forward_t(&s2, true)?;
        let h = self.up[0].forward_t(&h, &s2, true)?;
        self.up[1].forward_t(&h, &s1, true)
    }
}

#[test]
fn odd_sizes_keep_the_input_size_in_both_modes() -> R<()> {
    for mode in [UpMode::Bilinear, UpMode::TransposedConv] {
        let map = VarMap::new();
        let net = Net::new(mode, "group:4", vb(&map))?;
        for (h, w) in [(16, 16), (17, 13), (9, 11), (4, 5), (31, 30)] {
            let x = Tensor::randn(0f32, 1., (2, 2, h, w), &Device::Cpu)?;
            let s1 = net.down[0].forward_t(&x, false)?;
            let s2 = net.down[1].forward_t(&s1, false)?;
            assert_eq!(s2.dims(), &[2, 8, h / 2, w / 2], "{mode:?}");
            let deep = net.down[2].forward_t(&s2, false)?;
            assert_eq!(deep.dims(), &[2, 16, h / 4, w / 4], "{mode:?}");
            assert_eq!(net.forward(&x)?.dims(), &[2, 4, h, w], "{mode:?} {h}x{w}");
        }
    }
    Ok(())
}

#[test]
fn tensor_names_and_shapes() -> R<()> {
    for (mode, up) in [
        (UpMode::Bilinear, [6, 10, 1, 1]),
        (UpMode::TransposedConv, [10, 6, 2, 2]),
    ] {
        let map = VarMap::new();
        let cfg = UpBlockConfig::default()
            .with_mode(mode)
            .with_norm("group:2");
        up_block(10, 4, 6, cfg, vb(&map).pp("u"))?;
        down_block(3, 8, DownBlockConfig::default(), vb(&map).pp("d"))?;
        let data = map.data().lock().expect("varmap lock");
        let dims = |k: &str| data.get(k).map(|v| v.dims().to_vec());
        assert_eq!(dims("u.up.weight"), Some(up.to_vec()), "{mode:?}");
        assert_eq!(dims("u.up.bias"), Some(vec![6]));
        assert_eq!(dims("u.conv1.weight"), Some(vec![6, 10, 3, 3])); // skip 4 + up 6
        assert_eq!(dims("u.conv2.weight"), Some(vec![6, 6, 3, 3]));
        assert_eq!(dims("u.norm1.weight"), Some(vec![6]));
        assert_eq!(dims("u.norm2.bias"), Some(vec![6]));
        assert_eq!(dims("d.conv1.weight"), Some(vec![8, 3, 3, 3]));
        assert_eq!(dims("d.conv2.weight"), Some(vec![8, 8, 3, 3]));
        // No conv bias when a norm follows.
        assert_eq!(dims("d.conv1.bias"), None);
        assert_eq!(data.len(), 2 + 6 + 6, "{mode:?}");
    }
    // With no norm the convs carry a bias.
    let map = VarMap::new();
    let cfg = DownBlockConfig::default().with_norm("none");
    down_block(3, 8, cfg, vb(&map))?;
    let names: Vec<String> = map.data().lock().expect("lock").keys().cloned().collect();
    assert!(names.contains(&"conv1.bias".to_string()), "{names:?}");
    Ok(())
}

/// Central differences of `sum(f(x) * gy)` in f64, element by element.
fn finite_diff_f64(x: &Tensor, gy: &Tensor, f: impl Fn(&Tensor) -> R<Tensor>) -> R<Tensor> {
    let xs = x.flatten_all()?.to_vec1::<f64>()?;
    let loss = |v: Vec<f64>| -> R<f64> {
        let y = f(&Tensor::from_vec(v, x.shape(), x.device())?)?;
        Ok((y * gy)?.sum_all()?.to_scalar::<f64>()?)
    };
    let mut fd = Vec::with_capacity(xs.len());
    for i in 0..xs.len() {
        let (mut p, mut m) = (xs.clone(), xs.clone());
        p[i] += 1e-6;
        m[i] -= 1e-6;
        fd.push((loss(p)? - loss(m)?) / 2e-6);
    }
    Ok(Tensor::from_vec(fd, x.shape(), x.device())?)
}

#[test]
fn gradients_match_finite_differences_in_f64() -> R<()> {
    // Norm "none" runs in f64 (the fused norms are f32/f16/bf16), so the check is tight; odd
    // sizes exercise the dropped row of the pool and the padding / resize of the up path.
    for mode in [UpMode::Bilinear, UpMode::TransposedConv] {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F64, &Device::Cpu);
        let net = Net::new(mode, "none", vb)?;
        let x = Tensor::randn(0f64, 1., (2, 2, 11, 9), &Device::Cpu)?;
        let gy = Tensor::randn(0f64, 1., (2, 4, 11, 9), &Device::Cpu)?;
        let (_, gx) = fwd_bwd1(&x, &gy, |x| net.forward(x))?;
        let fd = finite_diff_f64(&x, &gy, |x| Ok(net.forward(x)?))?;
        assert_close(&format!("{mode:?} dx"), &gx, &fd, 1e-6);
    }
    Ok(())
}

#[test]
fn gradients_reach_every_parameter() -> R<()> {
    for mode in [UpMode::Bilinear, UpMode::TransposedConv] {
        let map = VarMap::new();
        let net = Net::new(mode, "group:2", vb(&map))?;
        let x = Tensor::randn(0f32, 1., (2, 2, 11, 9), &Device::Cpu)?;
        let gy = Tensor::randn(0f32, 1., (2, 4, 11, 9), &Device::Cpu)?;
        let grads = (net.forward(&x)? * &gy)?.sum_all()?.backward()?;
        for (name, var) in map.data().lock().expect("lock").iter() {
            let norm = match grads.get(var.as_tensor()) {
                Some(g) => g.abs()?.sum_all()?.to_scalar::<f32>()?,
                None => 0.0,
            };
            assert!(norm > 0.0, "{mode:?}: no gradient for {name}");
        }
    }
    Ok(())
}

#[test]
fn down_block_gradient_matches_finite_differences_in_f64() -> R<()> {
    // candle's max_pool2d backward is off by the window size; the block's pool is not.
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F64, &Device::Cpu);
    let cfg = DownBlockConfig::default().with_norm("none");
    let block = down_block(3, 4, cfg, vb)?;
    let x = Tensor::randn(0f64, 1., (2, 3, 9, 7), &Device::Cpu)?;
    let gy = Tensor::randn(0f64, 1., (2, 4, 4, 3), &Device::Cpu)?;
    let (_, gx) = fwd_bwd1(&x, &gy, |x| block.forward_t(x, true))?;
    let fd = finite_diff_f64(&x, &gy, |x| Ok(block.forward_t(x, true)?))?;
    assert_close("DownBlock dx", &gx, &fd, 1e-6);
    Ok(())
}

#[test]
fn bilinear_conv_before_resize_equals_resize_before_conv() -> R<()> {
    // The up path runs its 1x1 conv at low resolution; resizing first gives the same map
    // (both are linear and the interpolation weights of every output pixel sum to 1).
    let map = VarMap::new();
    up_block(
        6,
        3,
        5,
        UpBlockConfig::default().with_norm("none"),
        vb(&map),
    )?;
    let param = |k: &str| map.data().lock().expect("lock")[k].as_tensor().clone();
    let conv = Conv2d::new(
        param("up.weight"),
        Some(param("up.bias")),
        Default::default(),
    );
    let x = Tensor::randn(0f32, 1., (1, 6, 5, 4), &Device::Cpu)?;
    let low = upsample_bilinear2d(&conv.forward(&x)?, 11, 9, false)?;
    let high = conv.forward(&upsample_bilinear2d(&x, 11, 9, false)?)?;
    assert_close("conv/resize commute", &low, &high, 1e-5);
    Ok(())
}

#[test]
fn bad_input_is_an_error() -> R<()> {
    let dev = Device::Cpu;
    let map = VarMap::new();
    let down = down_block(3, 8, DownBlockConfig::default(), vb(&map).pp("d"))?;
    let up = up_block(
        8,
        4,
        4,
        UpBlockConfig::default().with_norm("group:2"),
        vb(&map).pp("u"),
    )?;
    let t = |s: &[usize]| Tensor::zeros(s, DType::F32, &dev);
    let (d, u) = ("DownBlock", "UpBlock");
    // DownBlock input: rank, channels, too small to pool, zero size, dtype.
    assert_err_names(down.forward_t(&t(&[3, 8, 8])?, false), d, "(B, 3, H, W)");
    assert_err_names(down.forward_t(&t(&[1, 4, 8, 8])?, false), d, "(B, 3, H, W)");
    assert_err_names(down.forward_t(&t(&[1, 3, 1, 8])?, false), d, "max-pool");
    assert_err_names(down.forward_t(&t(&[1, 3, 0, 8])?, false), d, "non-zero");
    let f16 = t(&[1, 3, 8, 8])?.to_dtype(DType::F16)?;
    assert_err_names(down.forward_t(&f16, false), d, "dtype");
    // UpBlock: skip channels, input channels, batch mismatch, rank.
    let x = t(&[2, 8, 4, 4])?;
    let err = up.forward_t(&x, &t(&[2, 5, 8, 8])?, false);
    assert_err(
        "skip channels",
        err,
        &[u, "skip", "(B, 4, H, W)", "[2, 5, 8, 8]"],
    );
    assert_err_names(
        up.forward_t(&t(&[2, 7, 4, 4])?, &t(&[2, 4, 8, 8])?, false),
        u,
        "(B, 8, H, W)",
    );
    assert_err_names(
        up.forward_t(&x, &t(&[3, 4, 8, 8])?, false),
        u,
        "batch size 2",
    );
    assert_err_names(up.forward_t(&x, &t(&[4, 8, 8])?, false), u, "skip");
    // Constructors: zero channels, norm spec that does not fit.
    assert_err_names(
        down_block(0, 8, DownBlockConfig::default(), vb(&map).pp("z")),
        d,
        "in_channels",
    );
    let cfg = DownBlockConfig::default().with_norm("group:3");
    assert_err_names(down_block(3, 8, cfg, vb(&map).pp("g")), d, "group:N");
    let cfg = UpBlockConfig::default().with_norm("fancy");
    assert_err_names(up_block(8, 4, 4, cfg, vb(&map).pp("f")), u, "unknown norm");
    assert_err_names(
        up_block(8, 0, 4, UpBlockConfig::default(), vb(&map).pp("s")),
        u,
        "skip_channels",
    );
    Ok(())
}
