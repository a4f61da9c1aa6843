//! Selective-scan benches: our fused kernel vs the per-time-step loop of candle tensor ops
//! (mamba-minimal style, our `selective_scan_reference`), forward and forward + backward, same
//! run. Mamba's configuration: softplus, delta_bias, D, z gate.
//!
//! Group `mamba_vs_transformer`: a whole Mamba block vs a transformer encoder layer, forward,
//! `d_model` 256, batch 1, L = 512, 2048, 8192 (`cargo bench --bench ssm -- mamba_vs_transformer`).
//!
//! The loop's forward + backward is timed outside criterion, over `SSM_LOOP_RUNS` runs
//! (default 1) and printed: candle's backward of each per-step `narrow` pads its gradient to
//! the full `(B, D, L)` tensor, so the loop's backward costs O(L²) and one run at
//! `L = 2048` takes tens of seconds. Set `SSM_LOOP_RUNS=0` to skip it.
#[path = "common/alloc.rs"]
mod alloc;
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::attention::{transformer_encoder_layer, TransformerEncoderLayerConfig};
use candle_tricks::ops::AttentionMask;
use candle_tricks::ops::{selective_scan, selective_scan_reference, SelectiveScanConfig};
use candle_tricks::ssm::{mamba_block, MambaConfig};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use std::time::Duration;

type Scan = fn(
    &Tensor,
    &Tensor,
    &Tensor,
    &Tensor,
    &Tensor,
    &SelectiveScanConfig,
) -> candle_tricks::Result<(Tensor, Option<Tensor>)>;

fn ssm(c: &mut Criterion) {
    let dev = Device::Cpu;
    for (bsz, d, n, l) in [(1usize, 1536usize, 16usize, 2048usize), (8, 512, 16, 512)] {
        let name = format!("b{bsz}_d{d}_n{n}_l{l}");
        let var =
            |t: candle_core::Result<Tensor>| Var::from_tensor(&t.expect("tensor")).expect("var");
        let u = var(Tensor::randn(0f32, 1., (bsz, d, l), &dev));
        let delta = var(Tensor::randn(-2f32, 1., (bsz, d, l), &dev));
        let a = var(Tensor::rand(0.5f32, 16., (d, n), &dev).and_then(|t| t.neg()));
        let b = var(Tensor::randn(0f32, 1., (bsz, n, l), &dev));
        let cc = var(Tensor::randn(0f32, 1., (bsz, n, l), &dev));
        let dd = var(Tensor::ones(d, DType::F32, &dev));
        let z = var(Tensor::randn(0f32, 1., (bsz, d, l), &dev));
        let bias = var(Tensor::randn(0f32, 0.1, d, &dev));
        let cfg = SelectiveScanConfig::default()
            .with_d(&dd)
            .with_z(&z)
            .with_delta_bias(&bias)
            .with_delta_softplus(true);
        let fwd = |f: Scan| f(&u, &delta, &a, &b, &cc, &cfg).expect("scan").0;
        let fwd_bwd = |f: Scan| {
            let y = fwd(f);
            y.sum_all().and_then(|s| s.backward()).expect("backward")
        };
        let mut g = c.benchmark_group("selective_scan");
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        g.bench_function(format!("ours_fwd/{name}"), |bch| {
            bch.iter(|| fwd(selective_scan))
        });
        g.bench_function(format!("ours_fwd_bwd/{name}"), |bch| {
            bch.iter(|| fwd_bwd(selective_scan))
        });
        g.bench_function(format!("candle_loop_fwd/{name}"), |bch| {
            bch.iter(|| fwd(selective_scan_reference))
        });
        g.finish();
        let runs: u32 = std::env::var("SSM_LOOP_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let label = format!("candle_loop_fwd_bwd/{name}");
        // Honour a criterion name filter (the first argument that is not a flag or a number).
        let filter = std::env::args()
            .skip(1)
            .find(|a| !a.starts_with('-') && a.parse::<f64>().is_err());
        let wanted = filter.is_none_or(|f| format!("selective_scan/{label}").contains(&f));
        if runs > 0 && wanted {
            let t = std::time::Instant::now();
            for _ in 0..runs {
                fwd_bwd(selective_scan_reference);
            }
            let ms = t.elapsed().as_secs_f64() * 1e3 / runs as f64;
            println!("selective_scan/{label}: {ms:.0} ms (mean of {runs} runs)");
        }
    }
}

/// One Mamba block (expand 2, d_state 16) vs one pre-LN transformer encoder layer (4 heads, MLP
/// 4x, our flash attention), forward only, `d_model` 256, batch 1: linear vs quadratic in L.
/// `examples/mamba_vs_transformer.rs` adds memory, decode cost and the naive attention path.
fn mamba_vs_transformer(c: &mut Criterion) {
    let dev = Device::Cpu;
    let dm = 256;
    let vb = |m: &VarMap| VarBuilder::from_varmap(m, DType::F32, &dev);
    let (mm, tm) = (VarMap::new(), VarMap::new());
    let mamba = mamba_block(
        MambaConfig::new(dm).with_expand(2).with_d_state(16),
        vb(&mm),
    )
    .expect("mamba block");
    let tcfg = TransformerEncoderLayerConfig::new(4, 4 * dm).with_norm_first(true);
    let layer = transformer_encoder_layer(dm, tcfg, vb(&tm)).expect("transformer layer");
    let mut g = c.benchmark_group("mamba_vs_transformer");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for l in [512usize, 2048, 8192] {
        let x = Tensor::randn(0f32, 1., (1, l, dm), &dev).expect("input");
        g.bench_function(format!("mamba_fwd/l{l}"), |bch| {
            bch.iter(|| mamba.forward(&x).expect("mamba forward"))
        });
        g.bench_function(format!("transformer_fwd/l{l}"), |bch| {
            bch.iter(|| {
                layer
                    .forward_t(&x, &AttentionMask::None, false)
                    .expect("layer forward")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, ssm, mamba_vs_transformer);
criterion_main!(benches);
