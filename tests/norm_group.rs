//! Fused group / instance norm op and blocks: PyTorch fixtures (outputs, gradients, running
//! statistics), finite differences, f64 autograd of the reference, f16/bf16, gradient flow to
//! parameters before the norm, and bad input.

mod common;

use candle_core::{DType, Device, Module, ModuleT, Tensor, Var};
use candle_nn::VarBuilder;
use candle_tricks::norm::{
    group_norm, instance_norm, GroupNorm, GroupNormConfig, InstanceNorm, InstanceNormConfig,
};
use candle_tricks::ops;
use common::*;

/// `(case, groups, eps)`; groups 0 means one per channel (instance norm).
const CASES: [(&str, usize, f64); 9] = [
    ("gn_g1", 1, 1e-5),
    ("gn_g4", 4, 1e-5),
    ("gn_gc", 6, 1e-3),
    ("gn_5d", 4, 1e-5),
    ("gn_noaffine", 2, 1e-5),
    ("gn_rank2", 3, 1e-5),
    ("gn_big", 8, 1e-5),
    ("in_2d", 0, 1e-5),
    ("in_3d_noaffine", 0, 1e-5),
];

fn groups_of(x: &Tensor, g: usize) -> usize {
    if g == 0 {
        x.dims()[1]
    } else {
        g
    }
}

/// The fixture inputs `[x, w, b]` (or `[x]` without affine) of `case`.
fn inputs(f: &Fixtures, case: &str) -> Vec<Tensor> {
    let mut v = vec![field(f, case, "x").clone()];
    if f.contains_key(&format!("{case}.w")) {
        v.push(field(f, case, "w").clone());
        v.push(field(f, case, "b").clone());
    }
    v
}

fn run(t: &[Tensor], g: usize, eps: f64, reference: bool) -> candle_tricks::Result<Tensor> {
    let g = groups_of(&t[0], g);
    let (w, b) = (t.get(1), t.get(2));
    if reference {
        ops::group_norm_reference(&t[0], g, w, b, eps)
    } else {
        ops::group_norm(&t[0], g, w, b, eps)
    }
}

#[test]
fn fixtures_match_pytorch() -> R<()> {
    let f = fixtures("norm_group");
    for (case, g, eps) in CASES {
        let ins = inputs(&f, case);
        let refs: Vec<&Tensor> = ins.iter().collect();
        let gy = field(&f, case, "gy");
        let (y, gs) = fwd_bwd_n(&refs, gy, |t| run(t, g, eps, false))?;
        assert_close(&format!("{case} y"), &y, field(&f, case, "y"), 1e-5);
        // Two values per group in gn_rank2: its gradient is ill-conditioned in f32.
        let tol = if case == "gn_rank2" { 1e-3 } else { 1e-5 };
        assert_close(&format!("{case} gx"), &gs[0], field(&f, case, "gx"), tol);
        if ins.len() == 3 {
            assert_close(&format!("{case} gw"), &gs[1], field(&f, case, "gw"), 1e-5);
            assert_close(&format!("{case} gb"), &gs[2], field(&f, case, "gb"), 1e-5);
        }
        // The plain-tensor reference agrees too.
        let (yr, gr) = fwd_bwd_n(&refs, gy, |t| run(t, g, eps, true))?;
        assert_close(&format!("{case} reference y"), &yr, &y, 1e-5);
        assert_close(&format!("{case} reference gx"), &gr[0], &gs[0], tol);
    }
    Ok(())
}

#[test]
fn weight_only_and_bias_only_match_reference_f64() -> R<()> {
    let f = fixtures("norm_group");
    let (x, w, b, gy) = (
        field(&f, "gn_g4", "x"),
        field(&f, "gn_g4", "w"),
        field(&f, "gn_g4", "b"),
        field(&f, "gn_g4", "gy"),
    );
    check_vs_f64_reference(
        "weight only",
        (x, w, gy),
        1e-5,
        |x, w| ops::group_norm(x, 4, Some(w), None, 1e-5),
        |x, w| ops::group_norm_reference(x, 4, Some(w), None, 1e-5),
    )?;
    check_vs_f64_reference(
        "bias only",
        (x, b, gy),
        1e-5,
        |x, b| ops::group_norm(x, 4, None, Some(b), 1e-5),
        |x, b| ops::group_norm_reference(x, 4, None, Some(b), 1e-5),
    )?;
    Ok(())
}

#[test]
fn gradients_match_finite_differences() -> R<()> {
    let dev = Device::Cpu;
    for (shape, g) in [((2, 4, 3, 3), 2), ((1, 3, 5, 1), 3), ((2, 6, 1, 1), 1)] {
        let x = Tensor::randn(0.3f32, 1.5, shape, &dev)?;
        let gy = Tensor::randn(0f32, 1., shape, &dev)?;
        let w = Tensor::randn(1f32, 0.5, shape.1, &dev)?;
        let b = Tensor::randn(0f32, 0.5, shape.1, &dev)?;
        let what = format!("{shape:?} g{g}");
        check_fd2(&what, (&x, &w, &gy), 1e-2, 2e-2, |x, w| {
            ops::group_norm(x, g, Some(w), Some(&b), 1e-5)
        })?;
        check_fd2(
            &format!("{what} bias"),
            (&x, &b, &gy),
            1e-2,
            2e-2,
            |x, b| ops::group_norm(x, g, Some(&w), Some(b), 1e-5),
        )?;
    }
    Ok(())
}

#[test]
fn half_precision_matches_f32() -> R<()> {
    let f = fixtures("norm_group");
    for case in ["gn_g4", "gn_5d", "in_2d"] {
        let (x, w, gy) = fixture_xwgy(&f, case);
        let b = field(&f, case, "b");
        let g = if case == "in_2d" { 3 } else { 4 };
        for (dt, tol) in [(DType::F16, 1e-2), (DType::BF16, 5e-2)] {
            let bh = b.to_dtype(dt)?;
            check_half_vs_f32(case, (x, w, gy), dt, tol, |x, w| {
                ops::group_norm(x, g, Some(w), Some(&bh.to_dtype(x.dtype())?), 1e-5)
            })?;
        }
    }
    Ok(())
}

#[test]
fn gradient_flows_to_parameters_before_the_norm() -> R<()> {
    // y = GN(x * s), s a per-channel scale before the norm: its gradient must equal the one
    // through the plain-tensor reference and be non-zero.
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (2, 8, 4, 4), &dev)?;
    let gy = Tensor::randn(0f32, 1., (2, 8, 4, 4), &dev)?;
    let w = Tensor::randn(1f32, 0.3, 8, &dev)?;
    let s0 = Tensor::randn(1f32, 0.5, (1, 8, 1, 1), &dev)?;
    let grad_s = |reference: bool| -> R<Tensor> {
        let s = Var::from_tensor(&s0)?;
        let h = x.broadcast_mul(s.as_tensor())?;
        let y = if reference {
            ops::group_norm_reference(&h, 2, Some(&w), None, 1e-5)?
        } else {
            ops::group_norm(&h, 2, Some(&w), None, 1e-5)?
        };
        let grads = (y * &gy)?.sum_all()?.backward()?;
        Ok(grads.get(s.as_tensor()).ok_or("no gradient for s")?.clone())
    };
    let (ours, want) = (grad_s(false)?, grad_s(true)?);
    assert!(want.abs()?.sum_all()?.to_scalar::<f32>()? > 1e-3);
    assert_close("grad s", &ours, &want, 1e-5);
    Ok(())
}

#[test]
fn blocks_match_pytorch() -> R<()> {
    let f = fixtures("norm_group");
    // GroupNorm loaded from a state dict with PyTorch's names.
    let ts = [("gn.weight", "w"), ("gn.bias", "b")]
        .map(|(k, w)| (k.to_string(), field(&f, "gn_g4", w).clone()))
        .into_iter()
        .collect();
    let vb = VarBuilder::from_tensors(ts, DType::F32, &Device::Cpu);
    let gn = group_norm(4, 8, GroupNormConfig::default(), vb.pp("gn"))?;
    let y = gn.forward(field(&f, "gn_g4", "x"))?;
    assert_close("GroupNorm y", &y, field(&f, "gn_g4", "y"), 1e-5);
    // InstanceNorm without running stats, affine.
    let w = field(&f, "in_2d", "w").clone();
    let b = field(&f, "in_2d", "b").clone();
    let cfg = InstanceNormConfig::default().with_affine(true);
    let inorm = InstanceNorm::new(3, Some(w), Some(b), None, cfg)?;
    for train in [true, false] {
        let y = inorm.forward_t(field(&f, "in_2d", "x"), train)?;
        assert_close("InstanceNorm y", &y, field(&f, "in_2d", "y"), 1e-5);
    }
    Ok(())
}

#[test]
fn instance_norm_running_stats_match_pytorch() -> R<()> {
    let f = fixtures("norm_group");
    let mut varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = InstanceNormConfig::default()
        .with_affine(true)
        .with_track_running_stats(true);
    let inorm = instance_norm(4, cfg, vb.pp("inorm"))?;
    varmap.set_one("inorm.weight", get(&f, "run.weight"))?;
    varmap.set_one("inorm.bias", get(&f, "run.bias"))?;
    for i in 0..3 {
        let y = inorm.forward_t(get(&f, &format!("run.x{i}")), true)?;
        assert_close(
            &format!("step {i} y"),
            &y,
            get(&f, &format!("run.y{i}")),
            1e-5,
        );
        let rm = inorm.running_mean().ok_or("running mean")?;
        let rv = inorm.running_var().ok_or("running var")?;
        assert_close(
            &format!("step {i} rm"),
            rm,
            get(&f, &format!("run.rm{i}")),
            1e-5,
        );
        assert_close(
            &format!("step {i} rv"),
            rv,
            get(&f, &format!("run.rv{i}")),
            1e-5,
        );
    }
    // The VarMap holds the same, updated running statistics (state-dict names).
    let vars = varmap.data().lock().map_err(|e| e.to_string())?;
    let rm = vars.get("inorm.running_mean").ok_or("running_mean var")?;
    assert_close("varmap rm", rm.as_tensor(), get(&f, "run.rm2"), 1e-5);
    drop(vars);
    let y = inorm.forward_t(get(&f, "run.x3"), false)?;
    assert_close("eval y", &y, get(&f, "run.y3"), 1e-5);
    Ok(())
}

#[test]
fn bad_input_is_an_error_naming_the_op_or_block() -> R<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (2, 6, 4), &dev)?;
    let w6 = Tensor::ones(6, DType::F32, &dev)?;
    let op = "group_norm";
    let gn = |x: &Tensor, g, w: Option<&Tensor>, eps| ops::group_norm(x, g, w, None, eps);
    assert_err_names(gn(&x, 4, None, 1e-5), op, "num_groups");
    assert_err_names(gn(&x, 0, None, 1e-5), op, "num_groups");
    assert_err_names(
        gn(&Tensor::zeros(6, DType::F32, &dev)?, 1, None, 1e-5),
        op,
        "rank",
    );
    assert_err_names(gn(&x, 2, None, 0.0), op, "eps");
    assert_err_names(gn(&x, 2, None, f64::NAN), op, "eps");
    let w4 = Tensor::ones(4, DType::F32, &dev)?;
    assert_err_names(gn(&x, 2, Some(&w4), 1e-5), op, "weight");
    let w6h = w6.to_dtype(DType::F16)?;
    assert_err_names(gn(&x, 2, Some(&w6h), 1e-5), op, "weight");
    assert_err_names(gn(&x.to_dtype(DType::F64)?, 2, None, 1e-5), op, "input");
    assert_err_names(gn(&x.to_dtype(DType::U8)?, 2, None, 1e-5), op, "input");
    assert_err_names(
        gn(&Tensor::zeros((2, 6, 0), DType::F32, &dev)?, 2, None, 1e-5),
        op,
        "input",
    );

    // GroupNorm block.
    let b = "GroupNorm";
    let cfg = GroupNormConfig::default();
    assert_err_names(
        GroupNorm::new(4, 6, None, None, cfg.with_affine(false)),
        b,
        "num_groups",
    );
    assert_err_names(
        GroupNorm::new(0, 6, None, None, cfg.with_affine(false)),
        b,
        "num_groups",
    );
    assert_err_names(
        GroupNorm::new(2, 6, None, None, cfg.with_eps(-1.0)),
        b,
        "eps",
    );
    assert_err_names(GroupNorm::new(2, 6, None, None, cfg), b, "weight");
    let blk = GroupNorm::new(2, 6, Some(w6.clone()), Some(w6.clone()), cfg)?;
    assert_err_names(
        blk.forward(&Tensor::zeros((2, 4, 3), DType::F32, &dev)?),
        b,
        "input",
    );
    assert_err_names(
        blk.forward(&Tensor::zeros(6, DType::F32, &dev)?),
        b,
        "input",
    );
    assert_err_names(blk.forward(&x.to_dtype(DType::F16)?), b, "input");
    assert_err_names(
        blk.forward(&Tensor::zeros((0, 6, 3), DType::F32, &dev)?),
        b,
        "input",
    );

    // InstanceNorm block.
    let b = "InstanceNorm";
    let cfg = InstanceNormConfig::default();
    assert_err_names(
        InstanceNorm::new(6, None, None, None, cfg.with_eps(0.0)),
        b,
        "eps",
    );
    assert_err_names(
        InstanceNorm::new(6, None, None, None, cfg.with_momentum(1.5)),
        b,
        "momentum",
    );
    assert_err_names(InstanceNorm::new(0, None, None, None, cfg), b, "channels");
    let track = cfg.with_track_running_stats(true);
    assert_err_names(
        InstanceNorm::new(6, None, None, None, track),
        b,
        "running_mean",
    );
    let blk = InstanceNorm::new(6, None, None, None, cfg)?;
    assert_err_names(
        blk.forward_t(&Tensor::zeros((2, 6), DType::F32, &dev)?, true),
        b,
        "input",
    );
    assert_err_names(
        blk.forward_t(&Tensor::zeros((2, 5, 3), DType::F32, &dev)?, true),
        b,
        "input",
    );
    assert_err_names(
        blk.forward_t(&Tensor::zeros((2, 6, 1), DType::F32, &dev)?, true),
        b,
        "spatial",
    );
    Ok(())
}

#[test]
fn many_tasks_match_reference_f64() -> R<()> {
    // Shapes spread over several worker tasks (rows of a task start mid-batch), so that each
    // row's group (and its channels' parameters) comes from its global index.
    let dev = Device::Cpu;
    for (shape, g) in [
        ((4, 32, 17, 19), 8),
        ((3, 64, 33, 31), 64),
        ((5, 12, 300, 1), 3),
    ] {
        let x = Tensor::randn(0.5f32, 2., shape, &dev)?;
        let gy = Tensor::randn(0f32, 1., shape, &dev)?;
        let c = x.dims()[1];
        let w = Tensor::randn(1f32, 0.5, c, &dev)?;
        let b = Tensor::randn(0f32, 0.5, c, &dev)?;
        let (y, gs) = fwd_bwd_n(&[&x, &w, &b], &gy, |t| {
            ops::group_norm(&t[0], g, Some(&t[1]), Some(&t[2]), 1e-5)
        })?;
        let up = |t: &Tensor| t.to_dtype(DType::F64);
        let (yr, gr) = fwd_bwd_n(&[&up(&x)?, &up(&w)?, &up(&b)?], &up(&gy)?, |t| {
            ops::group_norm_reference(&t[0], g, Some(&t[1]), Some(&t[2]), 1e-5)
        })?;
        let what = format!("{shape:?} g{g}");
        assert_close(&format!("{what} y"), &y, &yr, 1e-5);
        for (i, name) in ["gx", "gw", "gb"].iter().enumerate() {
            assert_close(&format!("{what} {name}"), &gs[i], &gr[i], 1e-4);
        }
    }
    Ok(())
}
