//! Bad input for `compress::prune`: amounts outside [0, 1) or above the size, unknown var
//! names, dims out of range, bad norm orders and schedules; legal edge cases checked by value.

use candle_tricks::compress::prune::{
    global_unstructured, l1_unstructured, ln_structured, Amount, GradualPruning,
    GradualPruningConfig, Pruner,
};

use super::*;

fn pruner() -> Pruner {
    Pruner::new([("w", Var::from_tensor(&t((4, 3))).unwrap())]).unwrap()
}

pub(super) fn prune_cases() -> Vec<Case> {
    let mut c = Cases::new("prune");
    let l1 = "l1_unstructured";
    let ln = "ln_structured";
    let gl = "global_unstructured";
    let pr = "Pruner";
    let gp = "GradualPruning";
    for (name, a) in [
        ("amount 1.0", 1.0),
        ("amount -0.1", -0.1),
        ("amount NaN", f64::NAN),
        ("amount +Inf", f64::INFINITY),
    ] {
        c.err(&format!("l1: {name}"), l1, move || {
            l1_unstructured(&t((3, 4)), a)?;
            Ok(())
        });
        c.err(&format!("ln: {name}"), ln, move || {
            ln_structured(&t((3, 4)), a, 2.0, 0)?;
            Ok(())
        });
        c.err(&format!("global: {name}"), gl, move || {
            global_unstructured(&[&t((3, 4)), &t(5)], a)?;
            Ok(())
        });
        // The pruner passes the ranking function's error through.
        c.err(&format!("Pruner: {name}"), l1, move || {
            pruner().l1_unstructured("w", a)?;
            Ok(())
        });
    }
    c.err("l1: count above size", l1, || {
        l1_unstructured(&t((3, 4)), 13usize)?;
        Ok(())
    });
    c.err("ln: count above slices", ln, || {
        ln_structured(&t((3, 4)), 4usize, 1.0, 0)?;
        Ok(())
    });
    c.err("ln: dim out of range", ln, || {
        ln_structured(&t((3, 4)), 0.5, 1.0, 2)?;
        Ok(())
    });
    c.err("ln: norm order 0", ln, || {
        ln_structured(&t((3, 4)), 0.5, 0.0, 0)?;
        Ok(())
    });
    c.err("ln: norm order NaN", ln, || {
        ln_structured(&t((3, 4)), 0.5, f64::NAN, 0)?;
        Ok(())
    });
    c.err("l1: integer weight", l1, || {
        l1_unstructured(&t((3, 4)).to_dtype(DType::U32)?, 0.5)?;
        Ok(())
    });
    c.err("l1: empty weight", l1, || {
        l1_unstructured(&Tensor::zeros((0, 4), DType::F32, &cpu())?, 0.5)?;
        Ok(())
    });
    c.err("global: no weights", gl, || {
        global_unstructured(&[], 0.5)?;
        Ok(())
    });
    c.err("Pruner: unknown var", pr, || {
        pruner().l1_unstructured("v", 0.5)?;
        Ok(())
    });
    c.err("Pruner: unknown var (ln)", pr, || {
        pruner().ln_structured("v", 0.5, 1.0, 0)?;
        Ok(())
    });
    c.err("Pruner: duplicate name", pr, || {
        let v = Var::from_tensor(&t(3))?;
        Pruner::new([("w", v.clone()), ("w", v)])?;
        Ok(())
    });
    c.err("Pruner: integer var", pr, || {
        Pruner::new([("w", Var::from_tensor(&t(3).to_dtype(DType::U8)?)?)])?;
        Ok(())
    });
    let cfg = GradualPruningConfig::default();
    for (name, bad) in [
        ("final 1.0", cfg.with_final_sparsity(1.0)),
        ("initial NaN", cfg.with_initial_sparsity(f64::NAN)),
        ("initial > final", cfg.with_initial_sparsity(0.9)),
        ("frequency 0", cfg.with_frequency(0)),
        ("num_updates 0", cfg.with_num_updates(0)),
        (
            "end step overflows",
            cfg.with_begin_step(usize::MAX).with_num_updates(1),
        ),
    ] {
        c.err(&format!("GradualPruning: {name}"), gp, move || {
            GradualPruning::new(bad)?;
            Ok(())
        });
    }
    // Legal edge cases, checked by value.
    c.val("l1: amount 0 keeps all", || {
        let m = l1_unstructured(&t((3, 4)), 0.0)?;
        ensure(
            m.sum_all()?.to_dtype(DType::U32)?.to_scalar::<u32>()? == 12,
            "mask",
        )
    });
    c.val("l1: count = size prunes all", || {
        let m = l1_unstructured(&t((3, 4)), Amount::Count(12))?;
        ensure(
            m.sum_all()?.to_dtype(DType::U32)?.to_scalar::<u32>()? == 0,
            "mask",
        )
    });
    c.val("ln: infinity norm on a non-contiguous weight", || {
        let w = noncontig((3, 4));
        let m = ln_structured(&w, 1usize, f64::INFINITY, 1)?;
        let dense = ln_structured(&w.contiguous()?, 1usize, f64::INFINITY, 1)?;
        close(
            "mask",
            &m.to_dtype(DType::F32)?,
            &dense.to_dtype(DType::F32)?,
            0.0,
        )
    });
    c.list
}
