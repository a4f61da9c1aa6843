//! Mamba vs Transformer, measured: forward time, peak extra memory and per-token decode cost of
//! one `MambaBlock` and one `TransformerEncoderLayer` as the sequence grows.
//!
//! Run: `cargo run --release --example mamba_vs_transformer [-- --max-len 4096]`
//! (default lengths 256 … 16384; about 2–3 minutes on 2 cores). It prints a table and writes
//! `docs/mamba_vs_transformer.svg` (three log-log panels).
//!
//! Setup: `d_model` 256, batch 1, f32, inference (no gradients).
//! - **mamba**: `MambaBlock`, expand 2 (`d_inner` 512), `d_state` 16, `d_conv` 4.
//! - **flash**: `TransformerEncoderLayer`, 4 heads, MLP 1024 (4×), pre-LN, GELU, attention
//!   through our tiled `scaled_dot_product_attention` (never stores the L×L scores).
//! - **naive**: the same layer and weights, attention written as matmul → softmax → matmul, so
//!   the `(H, L, L)` score and probability matrices exist in memory (skipped when those two
//!   would exceed ~4 GiB: "skipped (L² memory)").
//! - **decode**: cost of one more token at context L. Mamba: `MambaBlock::step` from the
//!   state after an L-token prompt. Transformer: the layer on one token with a KV cache of L
//!   past tokens (`MultiHeadAttention::forward_cached` plus norms and MLP).
//!
//! Each configuration runs in its own child process (this binary re-executed with `--child`),
//! so the peak memory is that configuration's alone: `VmHWM` from `/proc/self/status` after the
//! first forward minus the resident set just before it (the high-water mark is reset through
//! `/proc/self/clear_refs` when the kernel allows it). Off Linux an analytic estimate of the
//! activation bytes is printed instead (marked `~`). Forward times are the best of 2 to 9
//! forwards after that first one (fewer at large L; the minimum is the least disturbed by other
//! processes on a shared machine); decode times are the median over single steps.
//!
//! How to read it: on a log-log plot a cost $\propto L^k$ is a straight line of slope $k$.
//! Mamba's forward time and memory grow linearly (slope 1: a scan over the sequence with a
//! fixed-size state). The transformer's MLP and projections are linear too, but attention does
//! $O(L^2)$ work, so its time bends up to slope 2 once attention dominates (from a few thousand
//! tokens at this width); the flash kernel keeps its *memory* linear, while the naive path pays
//! $O(H L^2)$ bytes for the score matrix as well. For generation, Mamba's per-token cost and
//! state ($E \times (K + N)$ numbers) do not depend on the context, while attention reads a KV
//! cache of $2 L E$ numbers per layer per token, so its decode cost grows linearly with L.
//! The absolute numbers depend on the machine (cores, memory bandwidth, allocator); the slopes
//! and crossovers are the point.

// mimalloc with freed memory kept mapped (README, "allocator" tip): training steps free and
// reallocate the same large temporaries every iteration. One module, shared with the benches.
#[path = "../benches/common/alloc.rs"]
mod alloc;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::attention::{
    transformer_encoder_layer, KvCache, TransformerEncoderLayer, TransformerEncoderLayerConfig,
};
use candle_tricks::ops::{layer_norm, AttentionMask};
use candle_tricks::ssm::{mamba_block, MambaBlock, MambaConfig};
use std::time::Instant;

const D_MODEL: usize = 256;
const HEADS: usize = 4;
const FFN: usize = 4 * D_MODEL;
const LENS: [usize; 7] = [256, 512, 1024, 2048, 4096, 8192, 16384];
/// Skip the naive path when its score + probability matrices would exceed this many bytes.
const NAIVE_LIMIT: f64 = 4.0 * 1024.0 * 1024.0 * 1024.0;
const SVG_PATH: &str = "docs/mamba_vs_transformer.svg";

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn err(msg: impl Into<String>) -> Box<dyn std::error::Error> {
    msg.into().into()
}

// ---------------------------------------------------------------- memory probes (Linux)

/// A `kB` field of `/proc/self/status`, in MiB (`None` off Linux).
fn status_mib(field: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
}

/// Resets the high-water mark to the current resident set; returns the baseline in MiB.
fn memory_baseline() -> Option<f64> {
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    if reset {
        status_mib("VmRSS:")
    } else {
        status_mib("VmHWM:")
    }
}

// ---------------------------------------------------------------- models

fn mamba(dev: &Device) -> Res<MambaBlock> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, dev);
    let cfg = MambaConfig::new(D_MODEL).with_expand(2).with_d_state(16);
    Ok(mamba_block(cfg, vb)?)
}

/// The transformer layer and its weights by name (for the naive path and the decode step).
struct Layer {
    layer: TransformerEncoderLayer,
    w: std::collections::HashMap<String, Tensor>,
    eps: f64,
}

impl Layer {
    fn new(dev: &Device) -> Res<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, dev);
        let cfg = TransformerEncoderLayerConfig::new(HEADS, FFN).with_norm_first(true);
        let layer = transformer_encoder_layer(D_MODEL, cfg, vb)?;
        let w = varmap
            .data()
            .lock()
            .map_err(|_| err("VarMap lock poisoned"))?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        Ok(Self {
            layer,
            w,
            eps: cfg.layer_norm_eps,
        })
    }

    fn get(&self, name: &str) -> Res<&Tensor> {
        self.w
            .get(name)
            .ok_or_else(|| err(format!("no weight {name}")))
    }

    fn norm(&self, x: &Tensor, which: &str) -> Res<Tensor> {
        let (w, b) = (
            self.get(&format!("{which}.weight"))?,
            self.get(&format!("{which}.bias"))?,
        );
        Ok(layer_norm(x, Some(w), Some(b), self.eps)?)
    }

    fn linear(&self, x: &Tensor, w: &str, b: &str) -> Res<Tensor> {
        let y = x.broadcast_matmul(&self.get(w)?.t()?)?;
        Ok(y.broadcast_add(self.get(b)?)?)
    }

    /// `x + MLP(LN2(x))`.
    fn mlp_residual(&self, x: &Tensor) -> Res<Tensor> {
        let h = self.linear(&self.norm(x, "norm2")?, "linear1.weight", "linear1.bias")?;
        let h = self.linear(&h.gelu_erf()?, "linear2.weight", "linear2.bias")?;
        Ok((x + h)?)
    }

    /// The layer with our flash attention (the library's forward).
    fn flash(&self, x: &Tensor) -> Res<Tensor> {
        Ok(self.layer.forward_t(x, &AttentionMask::None, false)?)
    }

    /// The same math with the `(1, H, L, L)` scores materialised.
    fn naive(&self, x: &Tensor) -> Res<Tensor> {
        let (b, l, e) = x.dims3()?;
        let dh = e / HEADS;
        let h = self.norm(x, "norm1")?;
        let qkv = self.linear(&h, "self_attn.in_proj_weight", "self_attn.in_proj_bias")?;
        let heads = |i: usize| -> Res<Tensor> {
            Ok(qkv
                .narrow(D::Minus1, i * e, e)?
                .reshape((b, l, HEADS, dh))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = (heads(0)? * (1.0 / (dh as f64).sqrt()))?;
        let (k, v) = (heads(1)?, heads(2)?);
        let p = {
            let s = q.matmul(&k.t()?.contiguous()?)?; // (B, H, L, L)
            candle_nn::ops::softmax_last_dim(&s)?
        };
        let o = p.matmul(&v)?;
        drop(p);
        let o = o.transpose(1, 2)?.reshape((b, l, e))?;
        let a = self.linear(&o, "self_attn.out_proj.weight", "self_attn.out_proj.bias")?;
        self.mlp_residual(&(x + a)?)
    }

    /// One token `(1, 1, E)` through the layer with a KV cache.
    fn decode(&self, x: &Tensor, cache: &mut KvCache) -> Res<Tensor> {
        let h = self.norm(x, "norm1")?;
        let a = self.layer.self_attn().forward_cached(&h, cache, true)?;
        self.mlp_residual(&(x + a)?)
    }
}

// ---------------------------------------------------------------- child: one configuration

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Times `f` (already run once): best of as many runs as fit in ~`budget_s`, 2 to 9.
fn time_ms(first_ms: f64, budget_s: f64, mut f: impl FnMut() -> Res<Tensor>) -> Res<f64> {
    let reps = ((budget_s * 1e3 / first_ms.max(1e-3)) as usize).clamp(2, 9);
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        drop(f()?);
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(v.into_iter().fold(f64::INFINITY, f64::min))
}

/// Median ms of `n` single calls of `f`.
fn per_call_ms(n: usize, mut f: impl FnMut() -> Res<Tensor>) -> Res<f64> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        drop(f()?);
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(v))
}

/// Runs one configuration and prints `RESULT fwd_ms peak_mib decode_ms` (NaN when absent).
fn child(kind: &str, l: usize) -> Res<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (1, l, D_MODEL), &dev)?;
    let (fwd, peak, dec) = match kind {
        "mamba" => {
            let m = mamba(&dev)?;
            let base = memory_baseline();
            let t = Instant::now();
            let y = m.forward(&x)?;
            let first = t.elapsed().as_secs_f64() * 1e3;
            let peak = status_mib("VmHWM:").zip(base).map(|(h, b)| h - b);
            drop(y);
            let fwd = time_ms(first, 3.0, || Ok(m.forward(&x)?))?;
            // Decode after an L-token prompt: the state is the same size whatever L is.
            let (_, mut state) = m.forward_with_state(&x)?;
            let tok = Tensor::randn(0f32, 1., (1, D_MODEL), &dev)?;
            for _ in 0..4 {
                m.step(&tok, &mut state)?;
            }
            let dec = per_call_ms(256, || Ok(m.step(&tok, &mut state)?))?;
            (fwd, peak, dec)
        }
        "flash" | "naive" => {
            let layer = Layer::new(&dev)?;
            let run = |x: &Tensor| {
                if kind == "flash" {
                    layer.flash(x)
                } else {
                    layer.naive(x)
                }
            };
            let base = memory_baseline();
            let t = Instant::now();
            let y = run(&x)?;
            let first = t.elapsed().as_secs_f64() * 1e3;
            let peak = status_mib("VmHWM:").zip(base).map(|(h, b)| h - b);
            drop(y);
            let fwd = time_ms(first, 3.0, || run(&x))?;
            let dec = if kind == "flash" {
                // Prefill a KV cache with the L-token prompt, then decode single tokens.
                let mut cache = KvCache::new();
                let h = layer.norm(&x, "norm1")?;
                layer
                    .layer
                    .self_attn()
                    .forward_cached(&h, &mut cache, true)?;
                let tok = Tensor::randn(0f32, 1., (1, 1, D_MODEL), &dev)?;
                let t = Instant::now();
                layer.decode(&tok, &mut cache)?;
                let once = t.elapsed().as_secs_f64();
                let n = ((0.4 / once.max(1e-6)) as usize).clamp(8, 64);
                per_call_ms(n, || layer.decode(&tok, &mut cache))?
            } else {
                f64::NAN
            };
            (fwd, peak, dec)
        }
        _ => return Err(err(format!("unknown child kind {kind}"))),
    };
    let peak = peak.unwrap_or_else(|| analytic_mib(kind, l));
    println!("RESULT {fwd} {peak} {dec}");
    Ok(())
}

/// Rough activation bytes of one forward (used off Linux), in MiB.
fn analytic_mib(kind: &str, l: usize) -> f64 {
    let (e, dm, n, r) = (2 * D_MODEL, D_MODEL, 16, D_MODEL.div_ceil(16));
    let floats = match kind {
        // input transposed, x|z, conv out, x_dbl, delta, scan out, projected out (+ transpose)
        "mamba" => l * (3 * dm + 5 * e + r + 2 * n),
        // norms, qkv + head copies, attention out + merge, residuals, MLP hidden + GELU
        "flash" => l * (12 * dm + 2 * FFN),
        _ => l * (12 * dm + 2 * FFN) + 2 * HEADS * l * l,
    };
    -(floats as f64 * 4.0 / 1048576.0) // negative = estimate (printed with ~)
}

// ---------------------------------------------------------------- parent: table and plot

#[derive(Clone, Copy)]
struct Row {
    l: usize,
    mamba: Option<(f64, f64, f64)>,
    flash: Option<(f64, f64, f64)>,
    naive: Option<(f64, f64, f64)>,
}

fn spawn(kind: &str, l: usize) -> Res<(f64, f64, f64)> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args(["--child", kind, &l.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|s| s.starts_with("RESULT "))
        .ok_or_else(|| {
            err(format!(
                "child {kind} L={l} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        })?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    match v[..] {
        [a, b, c] => Ok((a, b, c)),
        _ => Err(err(format!("bad child output: {line}"))),
    }
}

/// The naive and flash layers agree (same weights), so the timings compare the same math.
fn check_same_math() -> Res<f64> {
    let dev = Device::Cpu;
    let layer = Layer::new(&dev)?;
    let x = Tensor::randn(0f32, 1., (1, 96, D_MODEL), &dev)?;
    let diff = (layer.flash(&x)? - layer.naive(&x)?)?.abs()?.max_all()?;
    Ok(diff.to_scalar::<f32>()? as f64)
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

fn fmt_mib(v: f64) -> String {
    if v < 0.0 {
        format!("~{:.0}", -v)
    } else {
        format!("{v:.0}")
    }
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let kind = args.get(2).ok_or_else(|| err("--child needs a kind"))?;
        let l = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(256);
        return child(kind, l);
    }
    let max_len = args
        .iter()
        .position(|a| a == "--max-len")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(16384);
    let t0 = Instant::now();
    println!(
        "Mamba vs Transformer: d_model {D_MODEL}, batch 1, f32, inference; {} threads",
        candle_core::utils::get_num_threads()
    );
    println!(
        "naive vs flash layer, same weights, L=96: max |diff| = {:.1e}",
        check_same_math()?
    );
    let state_kib = (2 * D_MODEL * (4 + 16) * 4) as f64 / 1024.0;
    println!(
        "decode state per layer: Mamba {state_kib:.0} KiB (constant); KV cache 2·L·E·4 B = {:.0} KiB at L=1024\n",
        (2 * 1024 * D_MODEL * 4) as f64 / 1024.0
    );
    println!(
        "{:>6} | {:>9} {:>9} {:>19} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>7}",
        "L",
        "mamba ms",
        "flash ms",
        "naive ms",
        "mamba MiB",
        "flash MiB",
        "naive MiB",
        "dec mamba",
        "dec attn",
        "KV MiB"
    );
    println!("{}", "-".repeat(114));
    let mut rows = Vec::new();
    for &l in LENS.iter().filter(|&&l| l <= max_len) {
        let m = spawn("mamba", l)?;
        let f = spawn("flash", l)?;
        let naive_bytes = 2.0 * (HEADS * l * l) as f64 * 4.0;
        let n = if naive_bytes > NAIVE_LIMIT {
            None
        } else {
            Some(spawn("naive", l)?)
        };
        let (nt, nm) = match n {
            Some((t, m, _)) => (fmt_ms(t), fmt_mib(m)),
            None => ("skipped (L² memory)".into(), String::new()),
        };
        println!(
            "{:>6} | {:>9} {:>9} {:>19} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>7.1}",
            l,
            fmt_ms(m.0),
            fmt_ms(f.0),
            nt,
            fmt_mib(m.1),
            fmt_mib(f.1),
            nm,
            fmt_ms(m.2),
            fmt_ms(f.2),
            (2 * l * D_MODEL * 4) as f64 / 1048576.0
        );
        rows.push(Row {
            l,
            mamba: Some(m),
            flash: Some(f),
            naive: n,
        });
    }
    println!(
        "\ntimes: forward ms (best of runs); MiB: peak extra resident memory of the forward (~ = analytic);\n\
         dec: ms per generated token at context L (Mamba step vs layer with KV cache).\n\
         total {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    std::fs::create_dir_all("docs")?;
    std::fs::write(SVG_PATH, svg(&rows))?;
    println!("wrote {SVG_PATH}");
    Ok(())
}

// ---------------------------------------------------------------- SVG (hand-written)

const COLORS: [(&str, &str); 3] = [
    ("Mamba block", "#1f77b4"),
    ("Transformer, flash attention", "#ff7f0e"),
    ("Transformer, naive attention", "#d62728"),
];

/// One log-log panel at `(x0, y0)` of size `w × h`: `series` of `(label index, points)`.
fn panel(
    out: &mut String,
    (x0, y0, w, h): (f64, f64, f64, f64),
    title: &str,
    ylabel: &str,
    series: &[(usize, Vec<(f64, f64)>)],
) {
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .filter(|p| p.0 > 0.0 && p.1 > 0.0)
        .collect();
    if pts.is_empty() {
        return;
    }
    let lx: Vec<f64> = pts.iter().map(|p| p.0.log10()).collect();
    let ly: Vec<f64> = pts.iter().map(|p| p.1.log10()).collect();
    let fold = |v: &[f64], f: fn(f64, f64) -> f64, s: f64| v.iter().copied().fold(s, f);
    let (xa, xb) = (
        fold(&lx, f64::min, f64::INFINITY) - 0.1,
        fold(&lx, f64::max, f64::NEG_INFINITY) + 0.1,
    );
    let (ya, yb) = (
        fold(&ly, f64::min, f64::INFINITY).floor(),
        fold(&ly, f64::max, f64::NEG_INFINITY)
            .ceil()
            .max(fold(&ly, f64::min, f64::INFINITY).floor() + 1.0),
    );
    let px = |v: f64| x0 + (v.log10() - xa) / (xb - xa) * w;
    let py = |v: f64| y0 + h - (v.log10() - ya) / (yb - ya) * h;
    out.push_str(&format!(
        "<rect x='{x0}' y='{y0}' width='{w}' height='{h}' fill='none' stroke='#444'/>\n\
         <text x='{:.1}' y='{:.1}' text-anchor='middle' font-size='14' font-weight='bold'>{title}</text>\n\
         <text x='{:.1}' y='{:.1}' text-anchor='middle' font-size='12'>sequence length L (log)</text>\n\
         <text transform='translate({:.1},{:.1}) rotate(-90)' text-anchor='middle' font-size='12'>{ylabel}</text>\n",
        x0 + w / 2.0,
        y0 - 10.0,
        x0 + w / 2.0,
        y0 + h + 36.0,
        x0 - 48.0,
        y0 + h / 2.0
    ));
    // Decade grid on y, the measured lengths on x.
    let mut e = ya as i32;
    while e as f64 <= yb {
        let v = 10f64.powi(e);
        let y = py(v);
        let label = if e >= 0 {
            format!("{v:.0}")
        } else {
            format!("{v}")
        };
        out.push_str(&format!(
            "<line x1='{x0}' y1='{y:.1}' x2='{:.1}' y2='{y:.1}' stroke='#ddd'/>\n\
             <text x='{:.1}' y='{:.1}' text-anchor='end' font-size='11'>{label}</text>\n",
            x0 + w,
            x0 - 4.0,
            y + 4.0
        ));
        e += 1;
    }
    for &l in LENS.iter() {
        let x = px(l as f64);
        if x < x0 || x > x0 + w {
            continue;
        }
        out.push_str(&format!(
            "<line x1='{x:.1}' y1='{y0}' x2='{x:.1}' y2='{:.1}' stroke='#eee'/>\n\
             <text x='{x:.1}' y='{:.1}' text-anchor='middle' font-size='10'>{l}</text>\n",
            y0 + h,
            y0 + h + 14.0
        ));
    }
    for (i, p) in series {
        let p: Vec<&(f64, f64)> = p.iter().filter(|p| p.0 > 0.0 && p.1 > 0.0).collect();
        let color = COLORS[*i].1;
        let path: Vec<String> = p
            .iter()
            .map(|&&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        out.push_str(&format!(
            "<polyline points='{}' fill='none' stroke='{color}' stroke-width='2'/>\n",
            path.join(" ")
        ));
        for &&(x, y) in &p {
            out.push_str(&format!(
                "<circle cx='{:.1}' cy='{:.1}' r='3' fill='{color}'/>\n",
                px(x),
                py(y)
            ));
        }
    }
}

fn svg(rows: &[Row]) -> String {
    let (w, h) = (1260.0, 470.0);
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' \
         viewBox='0 0 {w} {h}' font-family='sans-serif'>\n\
         <rect width='{w}' height='{h}' fill='white'/>\n"
    );
    let pick = |f: fn(&Row) -> Option<(f64, f64, f64)>, c: usize| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| {
                f(r).map(|v| {
                    let y = [v.0, v.1, v.2][c];
                    (r.l as f64, if c == 1 { y.abs() } else { y })
                })
            })
            .filter(|p| p.1.is_finite())
            .collect()
    };
    let fwd = [
        (0, pick(|r| r.mamba, 0)),
        (1, pick(|r| r.flash, 0)),
        (2, pick(|r| r.naive, 0)),
    ];
    let mem = [
        (0, pick(|r| r.mamba, 1)),
        (1, pick(|r| r.flash, 1)),
        (2, pick(|r| r.naive, 1)),
    ];
    let dec = [(0, pick(|r| r.mamba, 2)), (1, pick(|r| r.flash, 2))];
    panel(
        &mut s,
        (70.0, 40.0, 330.0, 330.0),
        "Forward time",
        "ms per forward (log)",
        &fwd,
    );
    panel(
        &mut s,
        (480.0, 40.0, 330.0, 330.0),
        "Peak extra memory",
        "MiB (log)",
        &mem,
    );
    panel(
        &mut s,
        (890.0, 40.0, 330.0, 330.0),
        "Decode: one more token at context L",
        "ms per token (log)",
        &dec,
    );
    s.push_str(
        "<text x='1055' y='62' text-anchor='middle' font-size='11' fill='#444'>\
         blue: MambaBlock::step; orange: layer + KV cache of L tokens</text>\n",
    );
    for (i, (label, color)) in COLORS.iter().enumerate() {
        let x = 70.0 + 330.0 * i as f64;
        s.push_str(&format!(
            "<line x1='{x}' y1='440' x2='{:.0}' y2='440' stroke='{color}' stroke-width='3'/>\n\
             <text x='{:.0}' y='444' font-size='12'>{label}</text>\n",
            x + 24.0,
            x + 30.0
        ));
    }
    s.push_str(&format!(
        "<text x='1230' y='462' text-anchor='end' font-size='10' fill='#666'>d_model {D_MODEL}, \
         batch 1, f32, CPU; slope 1 = linear, slope 2 = quadratic; numbers are machine-dependent \
         (examples/mamba_vs_transformer.rs)</text>\n</svg>\n"
    ));
    s
}
