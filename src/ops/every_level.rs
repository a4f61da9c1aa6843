//! Every SIMD kernel at every level this CPU has: forward and all gradients of each op under a
//! [`Cap`] equal the unrestricted run (the plain-tensor references are compared elsewhere).

use candle_core::{Device, Tensor, Var};

use super::*;
use crate::cpu::simd::{with_cap, Cap};
use crate::Result;

/// The output and the gradients wrt `inputs` of `sum(f(inputs) · sin(1 + index))`.
fn run(inputs: &[Var], f: &dyn Fn(&[Tensor]) -> Result<Tensor>) -> Result<Vec<Vec<f32>>> {
    let xs: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&xs)?;
    let n = y.elem_count();
    let probe = (Tensor::arange(1f32, n as f32 + 1.0, y.device())?.sin()?).reshape(y.shape())?;
    let grads = (&y * &probe)?.sum_all()?.backward()?;
    let mut out = vec![y.flatten_all()?.to_vec1::<f32>()?];
    for v in inputs {
        let g = grads.get(v.as_tensor()).expect("every input takes part");
        out.push(g.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// `f` at the scalar and AVX2 caps against the full level.
fn same_at_every_level(name: &str, shapes: &[&[usize]], f: &dyn Fn(&[Tensor]) -> Result<Tensor>) {
    let dev = Device::Cpu;
    let inputs: Vec<Var> = shapes
        .iter()
        .map(|s| Var::from_tensor(&Tensor::randn(0f32, 1.0, *s, &dev)?))
        .collect::<candle_core::Result<_>>()
        .expect("inputs");
    let want = run(&inputs, f).expect(name);
    let scalar = with_cap(Cap::Scalar, crate::cpu::Level::detect);
    assert!(
        matches!(scalar, crate::cpu::Level::Scalar(_)),
        "the cap holds"
    );
    for cap in [Cap::Scalar, Cap::Avx2] {
        let got = with_cap(cap, || run(&inputs, f)).expect(name);
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            for (a, b) in g.iter().zip(w) {
                let tol = 1e-4 * (1.0 + b.abs());
                assert!(
                    (a - b).abs() <= tol,
                    "{name} at {cap:?}, output {k}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn convolutions() {
    same_at_every_level("depthwise_conv2d", &[&[2, 3, 9, 7], &[6, 1, 3, 3]], &|t| {
        let cfg = DepthwiseConv2dConfig::default().with_stride(2);
        depthwise_conv2d(&t[0], &t[1], cfg)
    });
    same_at_every_level(
        "conv3d depthwise",
        &[&[1, 4, 5, 6, 7], &[4, 1, 3, 3, 3]],
        &|t| conv3d(&t[0], &t[1], Conv3dConfig::default().with_groups(4)),
    );
    same_at_every_level(
        "conv3d dense",
        &[&[1, 4, 5, 6, 7], &[6, 4, 3, 3, 3]],
        &|t| conv3d(&t[0], &t[1], Conv3dConfig::default()),
    );
}

#[test]
fn norms_and_softmax() {
    let shapes: &[&[usize]] = &[&[3, 5, 37], &[37], &[37]];
    same_at_every_level("layer_norm", shapes, &|t| {
        layer_norm(&t[0], Some(&t[1]), Some(&t[2]), 1e-5)
    });
    same_at_every_level("rms_norm", &shapes[..2], &|t| {
        rms_norm(&t[0], Some(&t[1]), 1e-5)
    });
    same_at_every_level("group_norm", &[&[2, 6, 5, 7], &[6], &[6]], &|t| {
        group_norm(&t[0], 3, Some(&t[1]), Some(&t[2]), 1e-5)
    });
    same_at_every_level("softmax_last_dim", &shapes[..1], &|t| {
        softmax_last_dim(&t[0])
    });
    same_at_every_level("gelu_erf", &shapes[..1], &|t| gelu_erf(&t[0]));
    // Cross-entropy per row (reduction None) with smoothing and weights; 37 classes leave a
    // remainder after the SIMD blocks.
    let cfg = CrossEntropyConfig::default()
        .with_label_smoothing(0.1)
        .with_reduction(crate::loss::Reduction::None);
    let labels: Vec<u32> = (0..6).map(|i| i * 5 % 37).collect();
    same_at_every_level("cross_entropy", &[&[6, 37]], &|t| {
        let cfg = cfg.clone().with_weight(t[0].get(0)?.abs()?.detach());
        cross_entropy(&t[0], &Tensor::new(labels.as_slice(), &Device::Cpu)?, &cfg)
    });
}

#[test]
fn attention_and_scan() {
    let qkv: &[&[usize]] = &[&[2, 2, 37, 16], &[2, 2, 29, 16], &[2, 2, 29, 16]];
    same_at_every_level("sdpa", qkv, &|t| {
        scaled_dot_product_attention(&t[0], &t[1], &t[2], &AttentionMask::None, None, 0.0)
    });
    // N = 16 (two 8-lane blocks: AVX-512 registers) and N = 20 (three: AVX2 at most).
    for n in [16, 20] {
        let shapes: &[&[usize]] = &[
            &[2, 4, 23],
            &[2, 4, 23],
            &[4, n],
            &[2, 1, n, 23],
            &[2, 1, n, 23],
        ];
        same_at_every_level("selective_scan", shapes, &|t| {
            let a = t[2].exp()?.neg()?;
            let delta = t[1].abs()?;
            let cfg = SelectiveScanConfig::default();
            Ok(selective_scan(&t[0], &delta, &a, &t[3], &t[4], &cfg)?.0)
        });
    }
}

#[test]
fn pools() {
    for mode in [PoolMode::Avg, PoolMode::Max] {
        same_at_every_level("adaptive_pool2d", &[&[2, 3, 23, 19]], &|t| {
            adaptive_pool2d(&t[0], (5, 3), mode)
        });
    }
    same_at_every_level("max_pool2d_same", &[&[2, 3, 23, 19]], &|t| {
        max_pool2d_same(&t[0], 5)
    });
    let c2 = Pool2dConfig::new([3, 3])
        .with_stride([2, 2])
        .with_padding([1, 1])
        .with_ceil_mode(true);
    same_at_every_level("max_pool2d", &[&[2, 3, 23, 19]], &|t| {
        max_pool2d(&t[0], &c2)
    });
    same_at_every_level("avg_pool2d", &[&[2, 3, 23, 19]], &|t| {
        avg_pool2d(&t[0], &c2)
    });
    let c3 = Pool3dConfig::new([2, 3, 2]).with_count_include_pad(false);
    same_at_every_level("max_pool3d", &[&[2, 3, 7, 9, 8]], &|t| {
        max_pool3d(&t[0], &c3)
    });
    same_at_every_level("avg_pool3d", &[&[2, 3, 7, 9, 8]], &|t| {
        avg_pool3d(&t[0], &c3)
    });
    for mode in [PoolMode::Avg, PoolMode::Max] {
        same_at_every_level("adaptive_pool3d", &[&[2, 3, 7, 9, 8]], &|t| match mode {
            PoolMode::Avg => adaptive_avg_pool3d(&t[0], [3, 4, 5]),
            PoolMode::Max => adaptive_max_pool3d(&t[0], [3, 4, 5]),
        });
    }
}
