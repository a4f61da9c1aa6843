//! Selective scan (Mamba S6): PyTorch fixtures (outputs and every gradient, with and without
//! softplus / z / delta_bias / D, grouped B and C, the last state and its gradient, odd L, L not
//! a multiple of the checkpoint stride), f64 autograd of the reference on multi-task shapes,
//! finite differences, f16/bf16, NaN checks and bad input.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_tricks::ops::{selective_scan, selective_scan_reference, SelectiveScanConfig};
use common::*;

const CASES: [&str; 5] = ["plain", "full", "grouped", "n40", "len1"];
const INPUTS: [&str; 8] = ["u", "delta", "a", "b", "c", "d", "z", "delta_bias"];

/// Inputs of one scan by name (`u`, `delta`, `a`, `b`, `c` and the optional ones).
#[derive(Clone)]
struct Case {
    t: Vec<(&'static str, Tensor)>,
    softplus: bool,
    last: bool,
}

impl Case {
    fn get(&self, k: &str) -> Option<&Tensor> {
        self.t.iter().find(|(n, _)| *n == k).map(|(_, t)| t)
    }
    fn map(&self, f: impl Fn(&Tensor) -> candle_core::Result<Tensor>) -> R<Case> {
        let t = self
            .t
            .iter()
            .map(|(n, t)| Ok((*n, f(t)?)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Case { t, ..*self })
    }
}

fn fixture_case(f: &Fixtures, case: &str) -> Case {
    let t = INPUTS
        .iter()
        .filter_map(|k| f.get(&format!("{case}.{k}")).map(|t| (*k, t.clone())))
        .collect();
    Case {
        t,
        softplus: case != "plain" && case != "len1",
        last: f.contains_key(&format!("{case}.last")),
    }
}

type Scan = fn(
    &Tensor,
    &Tensor,
    &Tensor,
    &Tensor,
    &Tensor,
    &SelectiveScanConfig,
) -> candle_tricks::Result<(Tensor, Option<Tensor>)>;

/// `y`, the last state and the gradients by input name.
type Outs = (Tensor, Option<Tensor>, Vec<(&'static str, Tensor)>);

/// Runs `scan` on Vars made from the case's inputs; returns `y`, the last state and the
/// gradients (by input name) of `sum(y * gy) + sum(last * gs)`.
fn run(scan: Scan, c: &Case, chunk: usize, gy: &Tensor, gs: Option<&Tensor>) -> R<Outs> {
    let vars: Vec<(&str, Var)> =
        c.t.iter()
            .map(|(n, t)| Ok((*n, Var::from_tensor(t)?)))
            .collect::<candle_core::Result<_>>()?;
    let v = |k: &str| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.as_tensor())
    };
    let cfg = SelectiveScanConfig {
        d: v("d"),
        z: v("z"),
        delta_bias: v("delta_bias"),
        delta_softplus: c.softplus,
        return_last_state: c.last,
        chunk,
        ..Default::default()
    };
    let req = |k| v(k).ok_or(format!("missing {k}"));
    let (y, last) = scan(
        req("u")?,
        req("delta")?,
        req("a")?,
        req("b")?,
        req("c")?,
        &cfg,
    )?;
    let mut loss = (&y * gy.to_dtype(y.dtype())?)?.sum_all()?;
    if let (Some(s), Some(gs)) = (&last, gs) {
        loss = (loss + (s * gs.to_dtype(s.dtype())?)?.sum_all()?)?;
    }
    let grads = loss.backward()?;
    let gs = vars
        .iter()
        .map(|(n, var)| {
            let g = grads
                .get(var.as_tensor())
                .ok_or(format!("no gradient for {n}"))?;
            Ok((*n, g.clone()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((y, last, gs))
}

#[test]
fn fixtures_match_pytorch() -> R<()> {
    let f = fixtures("selective_scan");
    for case in CASES {
        let c = fixture_case(&f, case);
        let gy = field(&f, case, "gy");
        let gs = f.get(&format!("{case}.gs"));
        // The default stride and strides that leave a partial last chunk (37 = 4·8 + 5).
        for chunk in [64, 8, 5, 1] {
            let what = format!("{case} chunk {chunk}");
            let (y, last, grads) = run(selective_scan, &c, chunk, gy, gs)?;
            assert_close(&format!("{what} y"), &y, field(&f, case, "y"), 2e-6);
            if c.last {
                let last = last.ok_or("no last state")?;
                assert_close(
                    &format!("{what} last"),
                    &last,
                    field(&f, case, "last"),
                    2e-6,
                );
            }
            for (n, g) in &grads {
                let want = field(&f, case, &format!("g_{n}"));
                assert_close(&format!("{what} grad {n}"), g, want, 1e-5);
            }
        }
        // The plain-tensor reference gives the same values and gradients.
        let (y, _, grads) = run(selective_scan_reference, &c, 64, gy, gs)?;
        assert_close(
            &format!("{case} reference y"),
            &y,
            field(&f, case, "y"),
            2e-6,
        );
        for (n, g) in &grads {
            let want = field(&f, case, &format!("g_{n}"));
            assert_close(&format!("{case} reference grad {n}"), g, want, 1e-5);
        }
    }
    Ok(())
}

fn randn(shape: &[usize], mean: f32, std: f32) -> R<Tensor> {
    Ok(Tensor::randn(mean, std, shape, &Device::Cpu)?)
}

/// A random case with every option: `(B, D, L)`, `N`, `G` (0: ungrouped `(B, N, L)`).
fn random_case(bsz: usize, d: usize, n: usize, l: usize, g: usize) -> R<Case> {
    let bc = if g == 0 {
        vec![bsz, n, l]
    } else {
        vec![bsz, g, n, l]
    };
    let a = (Tensor::rand(0.2f32, 2.0, (d, n), &Device::Cpu)?.neg())?;
    Ok(Case {
        t: vec![
            ("u", randn(&[bsz, d, l], 0.0, 1.0)?),
            ("delta", randn(&[bsz, d, l], -1.0, 1.0)?),
            ("a", a),
            ("b", randn(&bc, 0.0, 1.0)?),
            ("c", randn(&bc, 0.0, 1.0)?),
            ("d", randn(&[d], 0.0, 1.0)?),
            ("z", randn(&[bsz, d, l], 0.0, 1.0)?),
            ("delta_bias", randn(&[d], 0.0, 0.3)?),
        ],
        softplus: true,
        last: true,
    })
}

/// Our f32 op against the f64 autograd of the reference, on shapes that split into several
/// tasks and several state passes.
#[test]
fn matches_f64_reference_multi_task() -> R<()> {
    for (bsz, d, n, l, g, chunk) in [
        (2, 48, 16, 150, 0, 64),
        (3, 16, 24, 61, 4, 7),
        (1, 40, 33, 30, 2, 16),
    ] {
        let c = random_case(bsz, d, n, l, g)?;
        let gy = randn(&[bsz, d, l], 0.0, 1.0)?;
        let gs = randn(&[bsz, d, n], 0.0, 1.0)?;
        let (y, last, grads) = run(selective_scan, &c, chunk, &gy, Some(&gs))?;
        let up = |t: &Tensor| t.to_dtype(DType::F64);
        let c64 = c.map(up)?;
        let (yr, lastr, gr) = run(selective_scan_reference, &c64, chunk, &up(&gy)?, Some(&gs))?;
        let what = format!("({bsz}, {d}, {n}, {l}, g {g})");
        assert_close(&format!("{what} y"), &y, &yr, 1e-5);
        let (last, lastr) = (last.ok_or("last")?, lastr.ok_or("last")?);
        assert_close(&format!("{what} last"), &last, &lastr, 1e-5);
        for ((n, g), (_, r)) in grads.iter().zip(&gr) {
            assert_close(&format!("{what} grad {n}"), g, r, 2e-5);
        }
    }
    Ok(())
}

#[test]
fn finite_differences() -> R<()> {
    let c = random_case(1, 2, 3, 6, 0)?;
    let gy = randn(&[1, 2, 6], 0.0, 1.0)?;
    let gs = randn(&[1, 2, 3], 0.0, 1.0)?;
    let (_, _, grads) = run(selective_scan, &c, 4, &gy, Some(&gs))?;
    // loss(inputs) = sum(y * gy) + sum(last * gs), as one output against [gy | gs].
    let gcat = Tensor::cat(&[gy.flatten_all()?, gs.flatten_all()?], 0)?;
    for (k, (name, _)) in c.t.iter().enumerate() {
        let op = |x: &Tensor| -> candle_tricks::Result<Tensor> {
            let mut t = c.t.clone();
            t[k].1 = x.clone();
            let cc = Case { t, ..c.clone() };
            let get = |k| cc.get(k).expect("input");
            let cfg = SelectiveScanConfig {
                d: cc.get("d"),
                z: cc.get("z"),
                delta_bias: cc.get("delta_bias"),
                delta_softplus: true,
                return_last_state: true,
                chunk: 4,
                ..Default::default()
            };
            let (y, s) =
                selective_scan(get("u"), get("delta"), get("a"), get("b"), get("c"), &cfg)?;
            let s = s.expect("last state");
            Ok(Tensor::cat(&[y.flatten_all()?, s.flatten_all()?], 0)?)
        };
        let fd = finite_diff(&c.t[k].1, &gcat, 1e-2, op)?;
        let g = &grads[k].1;
        assert_matches_fd(&format!("grad {name}"), g, &fd, 1e-2)?;
    }
    Ok(())
}

#[test]
fn half_precision_within_tolerance() -> R<()> {
    let c = random_case(2, 24, 16, 70, 2)?;
    let gy = randn(&[2, 24, 70], 0.0, 1.0)?;
    let gs = randn(&[2, 24, 16], 0.0, 1.0)?;
    for (dtype, tol) in [(DType::F16, 3e-3), (DType::BF16, 2e-2)] {
        let ch = c.map(|t| t.to_dtype(dtype))?;
        let (gyh, gsh) = (gy.to_dtype(dtype)?, gs.to_dtype(dtype)?);
        let (y, last, grads) = run(selective_scan, &ch, 16, &gyh, Some(&gsh))?;
        let last = last.ok_or("last")?;
        assert_eq!((y.dtype(), last.dtype()), (dtype, dtype));
        let up = |t: &Tensor| t.to_dtype(DType::F32);
        let cf = ch.map(up)?;
        let (yf, lastf, gf) = run(selective_scan, &cf, 16, &up(&gyh)?, Some(&up(&gsh)?))?;
        assert_close(&format!("{dtype:?} y"), &y, &yf, tol);
        assert_close(
            &format!("{dtype:?} last"),
            &last,
            &lastf.ok_or("last")?,
            tol,
        );
        for ((n, g), (_, r)) in grads.iter().zip(&gf) {
            assert_eq!(g.dtype(), dtype, "grad {n}");
            assert_close(&format!("{dtype:?} grad {n}"), g, r, tol);
        }
    }
    Ok(())
}

/// Without a tracked gradient the forward keeps no checkpoints and gives the same values; a
/// strided input gives the same result as its contiguous copy.
#[test]
fn inference_and_strided_inputs() -> R<()> {
    let c = random_case(2, 8, 16, 33, 0)?;
    let g = |k| c.get(k).expect("input");
    let cfg = SelectiveScanConfig::default()
        .with_d(g("d"))
        .with_z(g("z"))
        .with_delta_bias(g("delta_bias"))
        .with_delta_softplus(true);
    let (y, last) = selective_scan(g("u"), g("delta"), g("a"), g("b"), g("c"), &cfg)?;
    assert!(last.is_none());
    let (r, _) = selective_scan_reference(g("u"), g("delta"), g("a"), g("b"), g("c"), &cfg)?;
    assert_close("inference", &y, &r, 1e-5);
    // u given as the transpose of a (B, L, D) tensor.
    let ut = g("u").transpose(1, 2)?.contiguous()?.transpose(1, 2)?;
    assert!(!ut.is_contiguous());
    let (ys, _) = selective_scan(&ut, g("delta"), g("a"), g("b"), g("c"), &cfg)?;
    assert_close("strided u", &ys, &y, 0.0);
    Ok(())
}

#[test]
fn checked_reports_non_finite_inputs() -> R<()> {
    let c = random_case(1, 4, 8, 10, 0)?;
    let g = |k| c.get(k).expect("input");
    let mut dv = g("delta").flatten_all()?.to_vec1::<f32>()?;
    dv[7] = f32::NAN;
    let delta = Tensor::from_vec(dv, (1, 4, 10), &Device::Cpu)?;
    let cfg = SelectiveScanConfig::default().with_checked(true);
    let r = selective_scan(g("u"), &delta, g("a"), g("b"), g("c"), &cfg);
    assert_err("NaN delta", r, &["selective_scan", "delta", "non-finite"]);
    let mut bias = vec![0f32; 4];
    bias[2] = f32::INFINITY;
    let bias = Tensor::new(bias, &Device::Cpu)?;
    let cfg2 = cfg.with_delta_bias(&bias);
    let r = selective_scan(g("u"), g("delta"), g("a"), g("b"), g("c"), &cfg2);
    assert_err(
        "inf bias",
        r,
        &["selective_scan", "delta_bias", "non-finite"],
    );
    // Unchecked, the NaN propagates to that channel's outputs instead.
    let (y, _) = selective_scan(g("u"), &delta, g("a"), g("b"), g("c"), &Default::default())?;
    let y = y.flatten_all()?.to_vec1::<f32>()?;
    assert!(y[7].is_nan() && y[..7].iter().all(|v| v.is_finite()));
    Ok(())
}

#[test]
fn bad_input_is_an_error() -> R<()> {
    let c = random_case(2, 4, 8, 10, 0)?;
    let g = |k| c.get(k).expect("input");
    let (u, delta, a, b, cc) = (g("u"), g("delta"), g("a"), g("b"), g("c"));
    let d0 = SelectiveScanConfig::default();
    let scan = |u: &Tensor, delta: &Tensor, a: &Tensor, b: &Tensor, c: &Tensor, cfg| {
        selective_scan(u, delta, a, b, c, cfg)
    };
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &Device::Cpu).expect("zeros");
    // Wrong ranks.
    assert_err_names(
        scan(&u.get(0)?, delta, a, b, cc, &d0),
        "selective_scan",
        "u",
    );
    assert_err_names(
        scan(u, delta, &a.get(0)?, b, cc, &d0),
        "selective_scan",
        "a",
    );
    let b5 = b.unsqueeze(0)?.unsqueeze(0)?;
    assert_err_names(
        scan(u, delta, a, &b5, cc, &d0),
        "selective_scan",
        "(B, N, L)",
    );
    // Mismatched B, D, L, N.
    assert_err_names(
        scan(u, &z(&[2, 4, 9]), a, b, cc, &d0),
        "selective_scan",
        "delta",
    );
    assert_err_names(
        scan(u, delta, &z(&[5, 8]), b, cc, &d0),
        "selective_scan",
        "a",
    );
    assert_err_names(
        scan(u, delta, a, &z(&[2, 7, 10]), cc, &d0),
        "selective_scan",
        "b",
    );
    assert_err_names(
        scan(u, delta, a, &z(&[3, 8, 10]), cc, &d0),
        "selective_scan",
        "b",
    );
    assert_err_names(
        scan(u, delta, a, b, &z(&[2, 8, 11]), &d0),
        "selective_scan",
        "c",
    );
    assert_err_names(
        scan(u, delta, a, b, &z(&[2, 1, 8, 10]), &d0),
        "selective_scan",
        "c",
    );
    // G = 3 does not divide D = 4.
    let (b3, c3) = (z(&[2, 3, 8, 10]), z(&[2, 3, 8, 10]));
    assert_err_names(
        scan(u, delta, a, &b3, &c3, &d0),
        "selective_scan",
        "dividing",
    );
    // Optional inputs.
    let (t4, t5) = (z(&[4]), z(&[5]));
    let cfg = d0.with_d(&t5);
    assert_err_names(scan(u, delta, a, b, cc, &cfg), "selective_scan", "d");
    let cfg = d0.with_delta_bias(&t5);
    assert_err_names(
        scan(u, delta, a, b, cc, &cfg),
        "selective_scan",
        "delta_bias",
    );
    let zz = z(&[2, 4, 11]);
    let cfg = d0.with_z(&zz);
    assert_err_names(scan(u, delta, a, b, cc, &cfg), "selective_scan", "z");
    // Zero-sized dims.
    assert_err_names(
        scan(
            &z(&[2, 4, 0]),
            &z(&[2, 4, 0]),
            a,
            &z(&[2, 8, 0]),
            &z(&[2, 8, 0]),
            &d0,
        ),
        "selective_scan",
        "non-zero",
    );
    assert_err_names(
        scan(u, delta, &z(&[4, 0]), b, cc, &d0),
        "selective_scan",
        "non-zero",
    );
    // chunk 0.
    let cfg = d0.with_chunk(0);
    assert_err_names(scan(u, delta, a, b, cc, &cfg), "selective_scan", "chunk");
    // Dtypes: mixed, and unsupported.
    let dh = delta.to_dtype(DType::F16)?;
    assert_err_names(scan(u, &dh, a, b, cc, &d0), "selective_scan", "delta");
    let t4h = t4.to_dtype(DType::BF16)?;
    let cfg = d0.with_d(&t4h);
    assert_err_names(scan(u, delta, a, b, cc, &cfg), "selective_scan", "d");
    let i = |t: &Tensor| t.to_dtype(DType::U32);
    let r = scan(&i(u)?, &i(delta)?, &i(a)?, &i(b)?, &i(cc)?, &d0);
    assert_err_names(r, "selective_scan", "u");
    let r = scan(
        &u.to_dtype(DType::F64)?,
        &delta.to_dtype(DType::F64)?,
        &a.to_dtype(DType::F64)?,
        &b.to_dtype(DType::F64)?,
        &cc.to_dtype(DType::F64)?,
        &d0,
    );
    assert_err_names(r, "selective_scan", "F64");
    Ok(())
}

/// Peak memory and CPU time at the bench's first shape, (B, D, N, L) = (1, 1536, 16, 2048),
/// Mamba's options. Run alone, single-threaded so that the thread's CPU time is all the work:
/// `RAYON_NUM_THREADS=1 cargo test --release --test selective_scan -- --ignored --nocapture
/// peak_memory` (`SS_REPS=5` repeats the forward, `SS_REF=1` also times the reference loop's
/// forward; both print; the only assertion is that every gradient exists).
#[test]
#[ignore]
fn peak_memory_and_cpu_time() -> R<()> {
    let status = || -> String {
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        s.lines()
            .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // CPU time of this thread, in ms.
    let cpu = || -> f64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        let ns: f64 = s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        ns / 1e6
    };
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    let (bsz, d, n, l) = (1, 1536, 16, 2048);
    let c = random_case(bsz, d, n, l, 0)?;
    let gy = randn(&[bsz, d, l], 0.0, 1.0)?;
    println!("inputs: {}", status());
    let g = |k| c.get(k).expect("input");
    let cfg = SelectiveScanConfig::default()
        .with_d(g("d"))
        .with_z(g("z"))
        .with_delta_bias(g("delta_bias"))
        .with_delta_softplus(true);
    let mut best = f64::MAX;
    for _ in 0..env("SS_REPS").unwrap_or(1) {
        let c0 = cpu();
        selective_scan(g("u"), g("delta"), g("a"), g("b"), g("c"), &cfg)?;
        best = best.min(cpu() - c0);
    }
    println!("ours fwd: {best:.1} ms thread CPU (best); {}", status());
    if env("SS_REF").is_some() {
        let c0 = cpu();
        selective_scan_reference(g("u"), g("delta"), g("a"), g("b"), g("c"), &cfg)?;
        println!("reference loop fwd: {:.1} ms thread CPU", cpu() - c0);
    }
    let c0 = cpu();
    let (_, _, grads) = run(selective_scan, &c, 64, &gy, None)?;
    println!(
        "ours fwd+bwd: {:.1} ms thread CPU; {}",
        cpu() - c0,
        status()
    );
    assert_eq!(grads.len(), 8);
    Ok(())
}

/// `seq_major`: the gate given and the output returned as `(B, L, D)` gives the channels-first
/// results transposed, gradients included, on the kernel and the reference, with and without
/// the last state.
#[test]
fn seq_major_equals_transposed_channels_first() -> R<()> {
    let c = random_case(2, 20, 5, 37, 0)?;
    let get = |k| c.get(k).ok_or(format!("missing {k}"));
    let gy = randn(&[2, 20, 37], 0.0, 1.0)?;
    for last in [false, true] {
        for reference in [false, true] {
            let scan = if reference {
                selective_scan_reference
            } else {
                selective_scan
            };
            let what = format!("seq_major last {last} reference {reference}");
            let inputs = ["u", "delta", "a", "b", "c", "d", "z", "delta_bias"]
                .iter()
                .map(|k| get(k))
                .collect::<Result<Vec<_>, _>>()?;
            let run = |seq_major: bool, gy: &Tensor| {
                fwd_bwd_n(&inputs, gy, |t| {
                    let z = if seq_major {
                        t[6].transpose(1, 2)?.contiguous()?
                    } else {
                        t[6].clone()
                    };
                    let cfg = SelectiveScanConfig {
                        d: Some(&t[5]),
                        z: Some(&z),
                        delta_bias: Some(&t[7]),
                        delta_softplus: true,
                        return_last_state: last,
                        seq_major,
                        chunk: 8,
                        ..Default::default()
                    };
                    let (y, s) = scan(&t[0], &t[1], &t[2], &t[3], &t[4], &cfg)?;
                    // Compare channels-first; the last state adds to the loss when returned.
                    let y = if seq_major {
                        y.transpose(1, 2)?.contiguous()?
                    } else {
                        y
                    };
                    match s {
                        Some(s) => Tensor::cat(&[y.flatten_all()?, s.sum_all()?.reshape(1)?], 0),
                        None => y.flatten_all(),
                    }
                })
            };
            let n = gy.elem_count();
            let g = if last {
                Tensor::cat(
                    &[
                        gy.flatten_all()?,
                        Tensor::ones(1, DType::F32, &Device::Cpu)?,
                    ],
                    0,
                )?
            } else {
                gy.flatten_all()?
            };
            let (y0, g0) = run(false, &g)?;
            let (y1, g1) = run(true, &g)?;
            assert_eq!(y0.elem_count(), n + usize::from(last));
            assert_close(&format!("{what} y"), &y1, &y0, 1e-6);
            for (i, (a, b)) in g1.iter().zip(&g0).enumerate() {
                assert_close(&format!("{what} grad {}", INPUTS[i]), a, b, 1e-6);
            }
        }
    }
    // A channels-first gate with seq_major is a shape error naming the layout.
    let cfg = SelectiveScanConfig {
        z: Some(get("z")?),
        seq_major: true,
        ..Default::default()
    };
    let r = selective_scan(
        get("u")?,
        get("delta")?,
        get("a")?,
        get("b")?,
        get("c")?,
        &cfg,
    );
    assert_err("seq_major z", r, &["selective_scan", "token-major"]);
    Ok(())
}
