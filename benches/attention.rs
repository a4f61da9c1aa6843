//! Attention benches: our tiled `scaled_dot_product_attention` (forward, forward + backward)
//! against the naive differentiable composition (matmul → softmax → matmul, autograd) and
//! candle-nn's forward-only CPU flash attention (`candle_nn::attention::flash_attn`), same run;
//! sliding-window attention at growing L with a fixed window.
//!
//! The naive composition at L = 4096 takes seconds per run and gigabytes, so it is timed once
//! (best of two, printed as `naive_once/...`) only when `ATTN_BENCH_NAIVE_LONG=1` is set.
#[path = "common/alloc.rs"]
mod alloc;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor, Var, D};
use candle_nn::attention::{flash_attn, AttnMask};
use candle_tricks::ops::{scaled_dot_product_attention, AttentionMask};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};

/// A named problem `(B, H, L, d)`, causal or not.
struct Case {
    name: &'static str,
    b: usize,
    h: usize,
    l: usize,
    d: usize,
    causal: bool,
}

const CASES: [Case; 3] = [
    Case {
        name: "vit_b_8x12x197x64",
        b: 8,
        h: 12,
        l: 197,
        d: 64,
        causal: false,
    },
    Case {
        name: "long_1x8x4096x64",
        b: 1,
        h: 8,
        l: 4096,
        d: 64,
        causal: false,
    },
    Case {
        name: "long_causal_1x8x4096x64",
        b: 1,
        h: 8,
        l: 4096,
        d: 64,
        causal: true,
    },
];

/// Inputs of a case: q, k, v as Vars (B, H, L, d).
fn qkv(c: &Case) -> [Var; 3] {
    let dev = Device::Cpu;
    let mk = || {
        Var::from_tensor(&Tensor::randn(0f32, 1., (c.b, c.h, c.l, c.d), &dev).expect("randn"))
            .expect("var")
    };
    [mk(), mk(), mk()]
}

fn ours(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Tensor {
    let mask = if causal {
        AttentionMask::Causal { kv_offset: 0 }
    } else {
        AttentionMask::None
    };
    scaled_dot_product_attention(q, k, v, &mask, None, 0.0).expect("ours")
}

/// What a user writes with candle ops: softmax(q kᵀ / √d + mask) v, differentiable.
fn naive(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Tensor {
    let d = q.dim(D::Minus1).expect("d");
    let s = (q.matmul(&k.t().expect("t")).expect("qk") / (d as f64).sqrt()).expect("scale");
    let s = match mask {
        Some(m) => s.broadcast_add(m).expect("mask"),
        None => s,
    };
    let p = candle_nn::ops::softmax(&s, D::Minus1).expect("softmax");
    p.matmul(v).expect("pv")
}

/// The additive causal mask (L, L) of the naive composition (built outside the timed loop).
fn causal_mask(l: usize) -> Tensor {
    let v: Vec<f32> = (0..l * l)
        .map(|n| {
            if n % l <= n / l {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    Tensor::from_vec(v, (l, l), &Device::Cpu).expect("mask")
}

fn backward(y: &Tensor) {
    y.sum_all().and_then(|l| l.backward()).expect("backward");
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g
}

fn sdpa(c: &mut Criterion) {
    let mut g = group(c, "sdpa_fwd");
    for case in &CASES {
        let [q, k, v] = qkv(case);
        let (q, k, v) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
        let long = case.l > 1024;
        let mask = case.causal.then(|| causal_mask(case.l));
        g.bench_function(format!("ours/{}", case.name), |b| {
            b.iter(|| ours(q, k, v, case.causal))
        });
        // candle-nn's flash attention wants (B, L, H, d); transposed outside the loop.
        let tr = |t: &Tensor| t.transpose(1, 2).and_then(|t| t.contiguous()).expect("tr");
        let (qt, kt, vt) = (tr(q), tr(k), tr(v));
        let scale = 1.0 / (case.d as f32).sqrt();
        let am = if case.causal {
            AttnMask::causal()
        } else {
            AttnMask::None
        };
        g.bench_function(format!("candle_flash_attn/{}", case.name), |b| {
            b.iter(|| flash_attn::<f32>(&qt, &kt, &vt, scale, am.clone(), None, None).expect("fa"))
        });
        if !long {
            g.bench_function(format!("naive/{}", case.name), |b| {
                b.iter(|| naive(q, k, v, mask.as_ref()))
            });
        }
    }
    g.finish();

    let mut g = group(c, "sdpa_fwd_bwd");
    for case in &CASES {
        let [q, k, v] = qkv(case);
        let (q, k, v) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
        g.bench_function(format!("ours/{}", case.name), |b| {
            b.iter(|| backward(&ours(q, k, v, case.causal)))
        });
        if case.l <= 1024 {
            let mask = case.causal.then(|| causal_mask(case.l));
            g.bench_function(format!("naive/{}", case.name), |b| {
                b.iter(|| backward(&naive(q, k, v, mask.as_ref())))
            });
        }
    }
    g.finish();

    if std::env::var("ATTN_BENCH_NAIVE_LONG").is_ok_and(|v| v == "1") {
        for case in CASES.iter().filter(|c| c.l > 1024) {
            let [q, k, v] = qkv(case);
            let (q, k, v) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
            let mask = case.causal.then(|| causal_mask(case.l));
            let once = |f: &dyn Fn()| {
                (0..2)
                    .map(|_| {
                        let t = Instant::now();
                        f();
                        t.elapsed()
                    })
                    .min()
                    .unwrap_or_default()
            };
            let fwd = once(&|| {
                naive(q, k, v, mask.as_ref());
            });
            let fwd_bwd = once(&|| backward(&naive(q, k, v, mask.as_ref())));
            println!(
                "naive_once/{}: fwd {fwd:.2?}, fwd+bwd {fwd_bwd:.2?}",
                case.name
            );
        }
    }
}

fn sliding_window(c: &mut Criterion) {
    // Fixed window, growing L: the time should grow linearly (tiles outside the band skipped).
    let mut g = group(c, "sdpa_window256_fwd_bwd");
    for l in [1024usize, 2048, 4096, 8192] {
        let case = Case {
            name: "",
            b: 1,
            h: 8,
            l,
            d: 64,
            causal: false,
        };
        let [q, k, v] = qkv(&case);
        let (q, k, v) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
        let mask = AttentionMask::SlidingWindow {
            window: 256,
            causal: false,
            global: 0,
        };
        g.bench_function(format!("ours/1x8x{l}x64"), |b| {
            b.iter(|| {
                let y = scaled_dot_product_attention(q, k, v, &mask, None, 0.0).expect("ours");
                backward(&y)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, sdpa, sliding_window);
criterion_main!(benches);
