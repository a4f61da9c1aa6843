//! Peak extra memory of attention forward + backward: our tiled kernel vs the naive composition.
//!
//! Run one implementation per process (the peak is per process):
//! `cargo run --release --example attention_memory -- ours 8192` or `-- naive 2048`.
//! Shape (1, 8, L, 64), f32, no mask. Prints the resident-set high-water mark (`VmHWM` from
//! `/proc/self/status`, Linux only) minus the resident set once q, k, v exist.

// mimalloc with freed memory kept mapped (README, "allocator" tip): training steps free and
// reallocate the same large temporaries every iteration. One module, shared with the benches.
#[path = "../benches/common/alloc.rs"]
mod alloc;
use candle_core::{Device, Tensor, Var, D};
use candle_tricks::ops::{scaled_dot_product_attention, AttentionMask};

/// A `kB` field of `/proc/self/status`, in MiB.
fn status_mib(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> candle_tricks::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map_or("ours", |s| s.as_str()).to_string();
    let l: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(8192);
    let (b, h, d) = (1, 8, 64);
    let dev = Device::Cpu;
    let mk = || Var::from_tensor(&Tensor::randn(0f32, 1., (b, h, l, d), &dev)?);
    let (q, k, v) = (mk()?, mk()?, mk()?);
    let base = status_mib("VmRSS:");
    let t = std::time::Instant::now();
    let y = if which == "naive" {
        let s = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
        candle_nn::ops::softmax(&s, D::Minus1)?.matmul(&v)?
    } else {
        scaled_dot_product_attention(&q, &k, &v, &AttentionMask::None, None, 0.0)?
    };
    let grads = y.sum_all()?.backward()?;
    let n = grads.get(&q).map_or(0, |g| g.elem_count());
    let peak = status_mib("VmHWM:");
    println!(
        "{which} L={l}: extra peak {:.0} MiB over {:.0} MiB of inputs ({:.2?}, dq has {n} values)",
        peak - base,
        base,
        t.elapsed()
    );
    Ok(())
}
