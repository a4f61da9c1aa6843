//! ConvNeXt block bench: our block (fused depthwise conv, fused last-axis LayerNorm, fused GELU,
//! layer scale folded into fc2) against the same block written with candle ops (grouped
//! `conv2d`, the LayerNorm composition, candle's `gelu_erf`, a separate layer-scale multiply),
//! same weights, same run.
#[path = "common/alloc.rs"]
mod alloc;
use criterion::{criterion_group, criterion_main, Criterion};

fn convnext(c: &mut Criterion) {
    use candle_core::{DType, Device, ModuleT, Tensor, D};
    use candle_nn::{VarBuilder, VarMap};
    use candle_tricks::blocks::{convnext_block, ConvNextBlockConfig};
    use candle_tricks::ops;
    use criterion::SamplingMode;
    use std::time::Duration;

    let dev = Device::Cpu;
    // ConvNeXt-T, first stage: 96 channels at 56x56.
    let (b, ch, hw) = (4usize, 96usize, 56usize);
    let name = format!("{b}x{ch}x{hw}x{hw}");
    let vm = VarMap::new();
    let cfg = ConvNextBlockConfig::default().with_ls_init_value(Some(0.5));
    let block =
        convnext_block(ch, cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).expect("block");
    let p = |n: &str| vm.data().lock().expect("lock")[n].as_tensor().clone();
    let (dw_w, dw_b) = (p("conv_dw.weight"), p("conv_dw.bias"));
    let (ln_w, ln_b) = (p("norm.weight"), p("norm.bias"));
    let (w1, b1, w2, b2) = (
        p("mlp.fc1.weight"),
        p("mlp.fc1.bias"),
        p("mlp.fc2.weight"),
        p("mlp.fc2.bias"),
    );
    let gamma = p("gamma");
    let composition = |x: &Tensor| -> candle_core::Result<Tensor> {
        let h = x
            .conv2d(&dw_w, 3, 1, 1, ch)?
            .broadcast_add(&dw_b.reshape((1, ch, 1, 1))?)?;
        let h = h.permute((0, 2, 3, 1))?.contiguous()?;
        let h = ops::layer_norm_reference(&h, Some(&ln_w), Some(&ln_b), 1e-6)
            .map_err(candle_core::Error::wrap)?;
        let h = h
            .broadcast_matmul(&w1.t()?)?
            .broadcast_add(&b1)?
            .gelu_erf()?;
        let h = h.broadcast_matmul(&w2.t()?)?.broadcast_add(&b2)?;
        let h = h.broadcast_mul(&gamma)?.permute((0, 3, 1, 2))?;
        x + h
    };
    let x =
        candle_core::Var::from_tensor(&Tensor::randn(0f32, 1., (b, ch, hw, hw), &dev).expect("x"))
            .expect("var");
    let x = x.as_tensor();
    let same = (block.forward_t(x, false).expect("ours") - composition(x).expect("composition"))
        .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
        .expect("diff");
    assert!(same < 1e-3, "the two blocks differ by {same}");
    let backward = |y: Tensor| {
        y.sqr()
            .and_then(|s| s.mean(D::Minus1)?.sum_all()?.backward())
            .expect("backward")
    };

    let mut g = c.benchmark_group("convnext_block");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    g.bench_function(format!("ours_fwd/{name}"), |bch| {
        bch.iter(|| block.forward_t(x, true).expect("ours"))
    });
    g.bench_function(format!("candle_composition_fwd/{name}"), |bch| {
        bch.iter(|| composition(x).expect("composition"))
    });
    g.bench_function(format!("ours_fwd_bwd/{name}"), |bch| {
        bch.iter(|| backward(block.forward_t(x, true).expect("ours")))
    });
    g.bench_function(format!("candle_composition_fwd_bwd/{name}"), |bch| {
        bch.iter(|| backward(composition(x).expect("composition")))
    });
    g.finish();
}

criterion_group!(benches, convnext);
criterion_main!(benches);
