//! Global pooling heads against PyTorch (tests/fixtures/gen_pool_global.py): timm's
//! `SelectAdaptivePool2d` for every pool type, size and flatten flag, and GeM (output and the
//! gradients of the input and of `p`); bad input.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::pool::{gem, GeM, GeMConfig, GlobalPool, SelectAdaptivePool2d};

mod common;
use common::*;

#[test]
fn select_adaptive_pool_matches_timm() -> R<()> {
    let f = fixtures("pool_global");
    let pools = [
        ("avg", GlobalPool::Avg),
        ("max", GlobalPool::Max),
        ("avgmax", GlobalPool::AvgMax),
        ("catavgmax", GlobalPool::CatAvgMax),
    ];
    for (name, pool) in pools {
        for flat in [0, 1] {
            for size in [(1, 1), (2, 3)] {
                let case = format!("select.{name}.{flat}.{}x{}", size.0, size.1);
                let layer = SelectAdaptivePool2d::new(size, pool, flat == 1)?;
                let (x, gy) = (field(&f, &case, "x"), field(&f, &case, "gy"));
                let (y, gx) = fwd_bwd1(x, gy, |x| layer.forward(x))?;
                assert_close(&format!("{case} y"), &y, field(&f, &case, "y"), 1e-6);
                assert_close(&format!("{case} gx"), &gx, field(&f, &case, "gx"), 1e-6);
                assert_eq!(
                    y.dim(1)?,
                    3 * layer.feat_mult() * if flat == 1 { size.0 * size.1 } else { 1 }
                );
            }
        }
    }
    Ok(())
}

#[test]
fn gem_matches_torch_with_gradients_to_x_and_p() -> R<()> {
    let f = fixtures("pool_global");
    for case in ["gem.p3", "gem.p1_7"] {
        let get = |w: &str| field(&f, case, w).to_dtype(DType::F32);
        let (x, p, gy) = (get("x")?, get("p")?, get("gy")?);
        let (y, g) = fwd_bwd_n(&[&x, &p], &gy, |t| {
            GeM::new(t[1].clone(), 1e-6)?.forward(&t[0])
        })?;
        assert_close(&format!("{case} y"), &y, &get("y")?, 1e-5);
        assert_close(&format!("{case} gx"), &g[0], &get("gx")?, 1e-4);
        assert_close(&format!("{case} gp"), &g[1], &get("gp")?, 1e-4);
    }
    Ok(())
}

#[test]
fn gem_p_is_a_trainable_var_under_cirtorch_name() -> R<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let layer = gem(GeMConfig::default(), vb.pp("pool"))?;
    assert_eq!(layer.p().to_vec1::<f32>()?, [3.0]);
    let names: Vec<String> = varmap
        .data()
        .lock()
        .expect("lock")
        .keys()
        .cloned()
        .collect();
    assert_eq!(names, ["pool.p"]);
    Ok(())
}

#[test]
fn bad_input_is_an_error() -> R<()> {
    let dev = Device::Cpu;
    assert_err_names(
        SelectAdaptivePool2d::new((0, 1), GlobalPool::Avg, false),
        "SelectAdaptivePool2d",
        "height",
    );
    for (p, needle) in [
        (0.0, "p must be"),
        (-1.0, "p must be"),
        (f64::NAN, "p must be"),
    ] {
        let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
        assert_err_names(gem(GeMConfig::default().with_p(p), vb), "GeM", needle);
    }
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
    assert_err_names(gem(GeMConfig::default().with_eps(0.0), vb), "GeM", "eps");
    // A checkpoint without `p` read through zeros would divide by p = 0: refused.
    assert_err_names(
        gem(GeMConfig::default(), VarBuilder::zeros(DType::F32, &dev)),
        "GeM",
        "p must be",
    );
    assert_err_names(
        GeM::new(Tensor::ones(2, DType::F32, &dev)?, 1e-6),
        "GeM",
        "p",
    );
    let layer = GeM::new(Tensor::new(&[3f32], &dev)?, 1e-6)?;
    let e = layer
        .forward(&Tensor::ones((2, 3, 4), DType::F32, &dev)?)
        .unwrap_err();
    assert!(e.to_string().contains("GeM"), "{e}");
    Ok(())
}
