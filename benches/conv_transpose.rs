//! Transposed-convolution benches on decoder shapes: our GEMM + col2im op against candle's
//! `Tensor::conv_transpose2d` (2-D) and the zero-insertion composition (3-D), forward and
//! forward + backward, in the same criterion group; and the padding modes of the convolutions
//! (`ops::pad2d` against its candle composition `pad2d_reference`).
//!
//! fwd+bwd is the forward then `y.backward()` on the op's output itself: candle seeds that with
//! a tensor of ones shaped like `y`, so both sides backpropagate the same fixed upstream
//! gradient and pay the same one fill. A `sum()` loss would add its own backward (a zeroed
//! output-sized gradient plus a broadcast add) to both sides: for the memory-bound padding
//! that floor was most of the time and hid the op's own cost. `pad2d/fwd_bwd_sum/…` keeps one
//! pair of that harness for the record.
#[path = "common/alloc.rs"]
mod alloc;
use criterion::{criterion_group, criterion_main, Criterion};

fn conv_transpose(c: &mut Criterion) {
    use candle_core::{Device, Tensor, Var};
    use candle_tricks::ops::{
        conv_transpose2d, conv_transpose3d, conv_transpose3d_reference, ConvTransposeConfig,
    };
    use criterion::SamplingMode;
    use std::time::Duration;

    let dev = Device::Cpu;
    let cfg = |s: usize, p: usize| {
        ConvTransposeConfig::default()
            .with_stride(s)
            .with_padding(p)
    };
    /// Name, x shape, weight shape, stride, padding.
    type Case = (
        &'static str,
        &'static [usize],
        &'static [usize],
        usize,
        usize,
    );
    let cases: [Case; 3] = [
        (
            "16x64x32x32_to32_k2_s2",
            &[16, 64, 32, 32],
            &[64, 32, 2, 2],
            2,
            0,
        ),
        (
            "16x64x32x32_to32_k4_s2_p1",
            &[16, 64, 32, 32],
            &[64, 32, 4, 4],
            2,
            1,
        ),
        (
            "2x32x16x32x32_to16_k2_s2",
            &[2, 32, 16, 32, 32],
            &[32, 16, 2, 2, 2],
            2,
            0,
        ),
    ];
    let mut g = c.benchmark_group("conv_transpose");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, xs, ws, s, p) in cases {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., xs, &dev).expect("input")).expect("var");
        let w =
            Var::from_tensor(&Tensor::randn(0f32, 0.1, ws, &dev).expect("weight")).expect("var");
        let c = cfg(s, p);
        let three_d = xs.len() == 5;
        let ours = |x: &Tensor, w: &Tensor| {
            if three_d {
                conv_transpose3d(x, w, None, &c).expect("ours")
            } else {
                conv_transpose2d(x, w, None, &c).expect("ours")
            }
        };
        let baseline = |x: &Tensor, w: &Tensor| {
            if three_d {
                conv_transpose3d_reference(x, w, None, &c).expect("composition")
            } else {
                x.conv_transpose2d(w, p, 0, s, 1).expect("candle")
            }
        };
        let base_name = if three_d {
            "candle_composition"
        } else {
            "candle"
        };
        let (xt, wt) = (x.as_tensor().detach(), w.as_tensor().detach());
        g.bench_function(format!("fwd/ours/{name}"), |b| b.iter(|| ours(&xt, &wt)));
        g.bench_function(format!("fwd/{base_name}/{name}"), |b| {
            b.iter(|| baseline(&xt, &wt))
        });
        g.bench_function(format!("fwd_bwd/ours/{name}"), |b| {
            b.iter(|| ours(&x, &w).backward().expect("bwd"))
        });
        g.bench_function(format!("fwd_bwd/{base_name}/{name}"), |b| {
            b.iter(|| baseline(&x, &w).backward().expect("bwd"))
        });
    }
    g.finish();
}

fn pad(c: &mut Criterion) {
    use candle_core::{Device, Tensor, Var};
    use candle_tricks::ops::{pad2d, pad2d_reference, PadMode};
    use std::time::Duration;

    // A 3×3 convolution's border on a U-Net / image-to-image feature map.
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (16, 64, 64, 64), &Device::Cpu).expect("x"))
        .expect("var");
    let mut g = c.benchmark_group("pad2d");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (mode_name, mode) in [
        ("reflect", PadMode::Reflect),
        ("replicate", PadMode::Replicate),
        ("circular", PadMode::Circular),
    ] {
        let run = |f: &dyn Fn(&Tensor) -> candle_tricks::Result<Tensor>| {
            f(x.as_tensor()).expect("pad").backward().expect("bwd")
        };
        g.bench_function(format!("fwd_bwd/ours/{mode_name}_16x64x64x64_p1"), |b| {
            b.iter(|| run(&|t| pad2d(t, [1; 4], mode)))
        });
        g.bench_function(
            format!("fwd_bwd/composition/{mode_name}_16x64x64x64_p1"),
            |b| b.iter(|| run(&|t| pad2d_reference(t, [1; 4], mode))),
        );
    }
    let run_sum = |f: &dyn Fn(&Tensor) -> candle_tricks::Result<Tensor>| {
        f(x.as_tensor())
            .expect("pad")
            .sum_all()
            .and_then(|l| l.backward())
            .expect("bwd")
    };
    g.bench_function("fwd_bwd_sum/ours/replicate_16x64x64x64_p1", |b| {
        b.iter(|| run_sum(&|t| pad2d(t, [1; 4], PadMode::Replicate)))
    });
    g.bench_function("fwd_bwd_sum/composition/replicate_16x64x64x64_p1", |b| {
        b.iter(|| run_sum(&|t| pad2d_reference(t, [1; 4], PadMode::Replicate)))
    });
    g.finish();
}

criterion_group!(benches, conv_transpose, pad);
criterion_main!(benches);
