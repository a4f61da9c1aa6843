//! Pruning against torch.nn.utils.prune (fixtures from tests/fixtures/gen_prune.py), the
//! Zhu & Gupta schedule, masks through AdamW with weight decay, and the sparsity report.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use candle_tricks::compress::prune::*;
use candle_tricks::optim::{AdamW, AdamWConfig};
use common::{assert_err_names, fixtures, get, Fixtures, R};

fn scalar_f64(f: &Fixtures, key: &str) -> f64 {
    get(f, key).to_vec1::<f64>().expect("f64")[0]
}

fn amount(f: &Fixtures, case: &str) -> Amount {
    let a = scalar_f64(f, &format!("{case}.amount"));
    if get(f, &format!("{case}.is_count"))
        .to_vec1::<u8>()
        .expect("u8")[0]
        == 1
    {
        Amount::Count(a as usize)
    } else {
        Amount::Fraction(a)
    }
}

fn assert_mask(case: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{case}: mask shape");
    assert_eq!(got.dtype(), DType::U8, "{case}: mask dtype");
    let g = got.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let w = want.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    assert_eq!(g, w, "{case}: mask differs from torch's");
}

#[test]
fn l1_unstructured_matches_torch() -> R<()> {
    let f = fixtures("prune");
    for case in ["l1_a", "l1_b", "l1_c", "l1_d", "l1_e", "l1_f"] {
        let w = get(&f, &format!("{case}.w"));
        let mask = l1_unstructured(w, amount(&f, case))?;
        assert_mask(case, &mask, get(&f, &format!("{case}.mask")));
        // Same ranking in half precision (the test values are exact in f16).
        let half = l1_unstructured(&w.to_dtype(DType::F16)?, amount(&f, case))?;
        assert_mask(case, &half, get(&f, &format!("{case}.mask")));
    }
    Ok(())
}

#[test]
fn global_unstructured_matches_torch() -> R<()> {
    let f = fixtures("prune");
    let ws: Vec<&Tensor> = (0..3).map(|i| get(&f, &format!("global.w{i}"))).collect();
    let masks = global_unstructured(&ws, 0.6)?;
    for (i, m) in masks.iter().enumerate() {
        assert_mask("global", m, get(&f, &format!("global.mask{i}")));
    }
    // Through the Pruner the same masks land on the vars.
    let vars: Vec<(String, Var)> = ws
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("l{i}"), Var::from_tensor(w).unwrap()))
        .collect();
    let mut p = Pruner::new(vars)?;
    p.global_unstructured(0.6)?;
    for i in 0..3 {
        let m = p.mask(&format!("l{i}"))?.expect("pruned");
        assert_mask("global pruner", m, get(&f, &format!("global.mask{i}")));
    }
    Ok(())
}

#[test]
fn ln_structured_matches_torch() -> R<()> {
    let f = fixtures("prune");
    for case in ["ln_a", "ln_b", "ln_c", "ln_d", "ln_e"] {
        let w = get(&f, &format!("{case}.w"));
        let n = scalar_f64(&f, &format!("{case}.n"));
        let dim = get(&f, &format!("{case}.dim")).to_vec1::<i64>()?[0] as usize;
        let mask = ln_structured(w, amount(&f, case), n, dim)?;
        assert_mask(case, &mask, get(&f, &format!("{case}.mask")));
    }
    Ok(())
}

#[test]
fn schedule_matches_the_formula_at_every_step() -> R<()> {
    let cfg = GradualPruningConfig {
        initial_sparsity: 0.1,
        final_sparsity: 0.85,
        begin_step: 7,
        num_updates: 6,
        frequency: 5,
    };
    let s = GradualPruning::new(cfg)?;
    assert_eq!(s.end_step(), 37);
    let (si, sf, t0, n, dt) = (0.1f64, 0.85f64, 7usize, 6usize, 5usize);
    let mut updates = 0;
    for t in 0..60usize {
        let update = t >= t0 && t <= t0 + n * dt && (t - t0).is_multiple_of(dt);
        // The latest update step at or before t, clamped to the last one.
        let want = if t < t0 {
            0.0
        } else {
            let last = (t0 + (t - t0) / dt * dt).min(t0 + n * dt);
            let frac = (last - t0) as f64 / (n * dt) as f64;
            sf + (si - sf) * (1.0 - frac).powi(3)
        };
        assert!((s.sparsity_at(t) - want).abs() < 1e-15, "step {t}");
        assert_eq!(s.is_update_step(t), update, "step {t}");
        assert_eq!(s.update_at(t).is_some(), update, "step {t}");
        updates += usize::from(update);
    }
    assert_eq!(updates, n + 1);
    assert_eq!(s.update_at(t0), Some(si));
    assert_eq!(s.update_at(t0 + n * dt), Some(sf));
    Ok(())
}

/// A (6, 5) and a (5,) weight with distinct values, and a loss that pushes every weight.
fn two_vars() -> R<(Var, Var)> {
    let a: Vec<f32> = (0..30)
        .map(|i| ((i * 17 % 31) as f32 - 15.5) / 10.0)
        .collect();
    let b: Vec<f32> = vec![0.3, -0.05, 1.2, -0.7, 0.01];
    Ok((
        Var::from_vec(a, (6, 5), &Device::Cpu)?,
        Var::from_vec(b, 5, &Device::Cpu)?,
    ))
}

fn zeros_where_masked(p: &Pruner, name: &str, v: &Var) -> R<bool> {
    let m = p
        .mask(name)?
        .expect("pruned")
        .flatten_all()?
        .to_vec1::<u8>()?;
    let w = v.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    Ok(m.iter().zip(&w).all(|(&k, &x)| k == 1 || x == 0.0))
}

#[test]
fn pruned_weights_stay_exactly_zero_through_adamw_with_weight_decay() -> R<()> {
    for mask_grads in [false, true] {
        let (a, b) = two_vars()?;
        let mut p = Pruner::new([("a", a.clone()), ("b", b.clone())])?;
        p.l1_unstructured("a", 0.8)?;
        p.ln_structured("b", 2usize, 1.0, 0)?;
        let cfg = AdamWConfig::default().with_lr(0.05).with_weight_decay(0.1);
        let mut opt = AdamW::new(vec![a.clone(), b.clone()], cfg)?;
        let target = Tensor::ones((6, 5), DType::F32, &Device::Cpu)?;
        let before = a.as_tensor().to_vec2::<f32>()?;
        for _ in 0..8 {
            let loss =
                ((a.as_tensor() - &target)?.sqr()?.sum_all()? + b.as_tensor().sqr()?.sum_all()?)?;
            let mut grads = loss.backward()?;
            if mask_grads {
                p.mask_grads(&mut grads)?;
            }
            opt.step(&grads)?;
            p.apply()?;
            assert!(zeros_where_masked(&p, "a", &a)?);
            assert!(zeros_where_masked(&p, "b", &b)?);
        }
        // The kept weights did train.
        assert_ne!(a.as_tensor().to_vec2::<f32>()?, before);
        let r = p.sparsity()?;
        assert_eq!((r.layers[0].zeros, r.layers[1].zeros), (24, 2));
    }
    Ok(())
}

#[test]
fn without_apply_adamw_revives_pruned_weights() -> R<()> {
    // Why `apply` exists: the gradient moves pruned weights off zero.
    let (a, _) = two_vars()?;
    let mut p = Pruner::new([("a", a.clone())])?;
    p.l1_unstructured("a", 0.5)?;
    let mut opt = AdamW::new(
        vec![a.clone()],
        AdamWConfig::default().with_weight_decay(0.1),
    )?;
    let loss = (a.as_tensor() - 1.0)?.sqr()?.sum_all()?;
    opt.backward_step(&loss)?;
    assert!(!zeros_where_masked(&p, "a", &a)?);
    p.apply()?;
    assert!(zeros_where_masked(&p, "a", &a)?);
    Ok(())
}

#[test]
fn sparsity_report_is_exact() -> R<()> {
    let dev = Device::Cpu;
    let x = Tensor::new(&[[0.0f32, 1.0, -0.0], [2.0, 0.0, 3.0]], &dev)?;
    let y = Tensor::new(&[0.5f64, 0.0, 0.0, 0.0], &dev)?;
    let z = Tensor::new(&[1.0f32, 2.0], &dev)?.to_dtype(DType::BF16)?;
    let r = sparsity_report(&[("x", &x), ("y", &y), ("z", &z)])?;
    let rows: Vec<(&str, usize, usize)> = r
        .layers
        .iter()
        .map(|l| (l.name.as_str(), l.zeros, l.total))
        .collect();
    assert_eq!(rows, [("x", 3, 6), ("y", 3, 4), ("z", 0, 2)]);
    assert_eq!((r.zeros, r.total), (6, 12));
    assert_eq!(r.fraction(), 0.5);
    assert_eq!(r.layers[1].fraction(), 0.75);
    let text = r.to_string();
    assert!(
        text.contains("global") && text.contains("50.00 %"),
        "{text}"
    );
    Ok(())
}

#[test]
fn masks_only_grow_and_make_permanent_keeps_zeros() -> R<()> {
    let (a, _) = two_vars()?;
    let mut p = Pruner::new([("a", a.clone())])?;
    p.l1_unstructured("a", 0.5)?;
    let first = p.mask("a")?.expect("pruned").to_vec2::<u8>()?;
    // A lower target keeps the old mask: nothing is revived.
    p.l1_unstructured("a", 0.2)?;
    assert_eq!(p.mask("a")?.expect("pruned").to_vec2::<u8>()?, first);
    // A higher one prunes the old entries plus the next smallest.
    p.l1_unstructured("a", 0.7)?;
    assert_eq!(p.sparsity()?.zeros, 21);
    let second = p.mask("a")?.expect("pruned").to_vec2::<u8>()?;
    for (r1, r2) in first.iter().zip(&second) {
        for (&m1, &m2) in r1.iter().zip(r2) {
            assert!(m2 <= m1);
        }
    }
    let vars = p.make_permanent()?;
    assert_eq!(vars.len(), 1);
    assert_eq!(vars[0].0, "a");
    let r = sparsity_report(&[("a", vars[0].1.as_tensor())])?;
    assert_eq!(r.zeros, 21);
    Ok(())
}

#[test]
fn gradual_schedule_drives_the_pruner() -> R<()> {
    let (a, b) = two_vars()?;
    let mut p = Pruner::new([("a", a), ("b", b)])?;
    let s = GradualPruning::new(
        GradualPruningConfig::default()
            .with_final_sparsity(0.8)
            .with_begin_step(2)
            .with_num_updates(3)
            .with_frequency(4),
    )?;
    let mut last = 0;
    for step in 0..20 {
        if let Some(target) = s.update_at(step) {
            p.global_unstructured(target)?;
        }
        let r = p.sparsity()?;
        assert!(r.zeros >= last);
        last = r.zeros;
        // round(s_t · 35) entries (no weight starts at zero).
        assert_eq!(
            r.zeros,
            (s.sparsity_at(step) * 35.0).round_ties_even() as usize
        );
    }
    assert_eq!(last, 28);
    Ok(())
}

#[test]
fn bad_input_is_an_error() -> R<()> {
    let w = Tensor::new(&[[1.0f32, 2.0], [3.0, 4.0]], &Device::Cpu)?;
    assert_err_names(l1_unstructured(&w, 1.0), "l1_unstructured", "[0, 1)");
    assert_err_names(l1_unstructured(&w, -0.1), "l1_unstructured", "[0, 1)");
    assert_err_names(l1_unstructured(&w, f64::NAN), "l1_unstructured", "NaN");
    assert_err_names(l1_unstructured(&w, 5usize), "l1_unstructured", "at most");
    assert_err_names(ln_structured(&w, 0.5, 2.0, 2), "ln_structured", "dim");
    assert_err_names(
        ln_structured(&w, 0.5, 0.0, 0),
        "ln_structured",
        "norm order",
    );
    assert_err_names(
        global_unstructured(&[], 0.5),
        "global_unstructured",
        "no weights",
    );
    let mut p = Pruner::new([("w", Var::from_tensor(&w)?)])?;
    assert_err_names(p.l1_unstructured("v", 0.5), "Pruner", "unknown var `v`");
    assert_err_names(p.mask("v"), "Pruner", "unknown var");
    let dup = Pruner::new([("w", Var::from_tensor(&w)?), ("w", Var::from_tensor(&w)?)]);
    assert_err_names(dup.map(|_| ()), "Pruner", "twice");
    let cfg = GradualPruningConfig::default();
    assert_err_names(
        GradualPruning::new(cfg.with_final_sparsity(1.0)),
        "GradualPruning",
        "final_sparsity",
    );
    assert_err_names(
        GradualPruning::new(cfg.with_initial_sparsity(0.9)),
        "GradualPruning",
        "must not exceed",
    );
    assert_err_names(
        GradualPruning::new(cfg.with_frequency(0)),
        "GradualPruning",
        "frequency",
    );
    assert_err_names(
        GradualPruning::new(cfg.with_num_updates(usize::MAX).with_frequency(2)),
        "GradualPruning",
        "overflows",
    );
    Ok(())
}
