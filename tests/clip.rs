//! Gradient clipping against torch.nn.utils and timm's adaptive_clip_grad (fixtures from
//! tests/fixtures/gen_clip.py), non-finite gradients, half precision and bad input.

mod common;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_tricks::optim::{agc, clip_grad_norm, clip_grad_norm_inf, clip_grad_value, grad_norm};
use common::{fixtures, get, Fixtures, R};

const BIG: (usize, usize) = (300, 500);

/// ((i * 7919) % 1000) / 1000 - 0.5 in f32, as gen_clip.py.
fn big_grad(scale: f32) -> R<Tensor> {
    let v: Vec<f32> = (0..BIG.0 * BIG.1)
        .map(|i| (((i as u64 * 7919) % 1000) as f32 / 1000.0 - 0.5) * scale)
        .collect();
    Ok(Tensor::from_vec(v, BIG, &Device::Cpu)?)
}

fn var_like(t: &Tensor) -> R<Var> {
    Ok(Var::zeros(t.shape(), t.dtype(), &Device::Cpu)?)
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn scalar(f: &Fixtures, key: &str) -> f64 {
    get(f, key)
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[0]
}

/// |a - b| <= tol * max |b| elementwise, NaN matching NaN and infinities exact.
fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    assert_eq!(a.dims(), b.dims(), "{what}: shape");
    let (a, b) = (vals(a), vals(b));
    let scale = 1.0
        + b.iter()
            .filter(|x| x.is_finite())
            .fold(0f32, |m, x| m.max(x.abs()));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let ok = if y.is_nan() {
            x.is_nan()
        } else if y.is_infinite() {
            x == y
        } else {
            (x - y).abs() <= tol * scale
        };
        assert!(ok, "{what}[{i}]: ours {x}, torch {y}");
    }
}

/// The three stored parameters and the big one, with their gradients in a fresh store.
fn norm_setup(f: &Fixtures, case: &str, scale: f32) -> R<(Vec<Var>, GradStore)> {
    let mut grads = GradStore::default();
    let mut vars = vec![];
    for k in ["w", "b", "c"] {
        let g = get(f, &format!("{case}.{k}.grad"));
        let v = var_like(g)?;
        grads.insert(v.as_tensor(), g.clone());
        vars.push(v);
    }
    let big = Var::zeros(BIG, DType::F32, &Device::Cpu)?;
    grads.insert(big.as_tensor(), big_grad(scale)?);
    vars.push(big);
    Ok((vars, grads))
}

fn check_norm_case(case: &str, scale: f32, max_norm: f64, inf: bool) -> R<()> {
    let f = fixtures("clip");
    let (vars, mut grads) = norm_setup(&f, case, scale)?;
    let before: Vec<Tensor> = vars.iter().map(|v| grads.get(v).unwrap().clone()).collect();
    let total = if inf {
        clip_grad_norm_inf(&mut grads, &vars, max_norm)?
    } else {
        let n = grad_norm(&grads, &vars)?;
        let total = clip_grad_norm(&mut grads, &vars, max_norm)?;
        assert_eq!(total, n, "{case}: returns the pre-clip norm");
        total
    };
    let (torch_total, exact) = (
        scalar(&f, &format!("{case}.total")),
        scalar(&f, &format!("{case}.norm64")),
    );
    assert!(
        (total - exact).abs() <= 1e-6 * exact,
        "{case}: {total} vs f64 {exact}"
    );
    // torch sums each tensor's squares in f32; ours keeps f32 partials per chunk and adds them
    // in f64, so it is at least as close to the exact norm.
    assert!(
        (total - torch_total).abs() <= 1e-5 * exact,
        "{case}: {total} vs torch {torch_total}"
    );
    assert!((total - exact).abs() <= (torch_total - exact).abs() + 1e-7 * exact);
    for (i, k) in ["w", "b", "c"].iter().enumerate() {
        let ours = grads.get(&vars[i]).unwrap();
        assert_close(
            &format!("{case}.{k}"),
            ours,
            get(&f, &format!("{case}.{k}.clipped")),
            1e-5,
        );
    }
    // Exactly the documented coefficient on our norm; torch's differs by its f32 norm.
    let ours_coef = (max_norm / (total + 1e-6)).min(1.0);
    for (v, b) in vars.iter().zip(&before) {
        assert_close(case, grads.get(v).unwrap(), &(b * ours_coef)?, 1e-7);
    }
    let coef = scalar(&f, &format!("{case}.coef"));
    let big = grads.get(&vars[3]).unwrap();
    assert_close(
        &format!("{case}.big"),
        big,
        &(big_grad(scale)? * coef)?,
        1e-5,
    );
    if coef == 1.0 {
        // Not clipped: the very same gradients.
        for (v, b) in vars.iter().zip(&before) {
            assert_eq!(grads.get(v).unwrap().id(), b.id());
        }
    }
    Ok(())
}

#[test]
fn global_norm_matches_torch() -> R<()> {
    check_norm_case("norm_clipped", 0.1, 1.0, false)?;
    check_norm_case("norm_unclipped", 0.001, 1e4, false)?;
    check_norm_case("norm_inf", 1.0, 0.25, true)
}

#[test]
fn big_gradient_norm_matches_f64() -> R<()> {
    // Above the chunk size, so the parallel path runs; compare with a plain f64 reduction.
    let v = Var::zeros(BIG, DType::F32, &Device::Cpu)?;
    let g = big_grad(3.0)?;
    let mut grads = GradStore::default();
    grads.insert(v.as_tensor(), g.clone());
    let exact = g
        .to_dtype(DType::F64)?
        .sqr()?
        .sum_all()?
        .sqrt()?
        .to_scalar::<f64>()?;
    let ours = grad_norm(&grads, std::slice::from_ref(&v))?;
    assert!((ours - exact).abs() <= 1e-6 * exact, "{ours} vs {exact}");
    // Deterministic: the same value every time.
    assert_eq!(ours, grad_norm(&grads, std::slice::from_ref(&v))?);
    Ok(())
}

#[test]
fn clip_value_matches_torch() -> R<()> {
    let f = fixtures("clip");
    let g = get(&f, "value.grad");
    let v = var_like(g)?;
    let mut grads = GradStore::default();
    grads.insert(v.as_tensor(), g.clone());
    clip_grad_value(&mut grads, std::slice::from_ref(&v), 0.3)?;
    assert_close(
        "value",
        grads.get(&v).unwrap(),
        get(&f, "value.clipped"),
        0.0,
    );
    Ok(())
}

#[test]
fn agc_matches_timm() -> R<()> {
    let f = fixtures("clip");
    let mut grads = GradStore::default();
    let mut vars = vec![];
    let names = ["conv", "linear", "bias", "gain"];
    for k in names {
        let v = Var::from_tensor(get(&f, &format!("agc.{k}.param")))?;
        grads.insert(v.as_tensor(), get(&f, &format!("agc.{k}.grad")).clone());
        vars.push(v);
    }
    agc(&mut grads, &vars, 0.05, 1e-3)?;
    for (k, v) in names.iter().zip(&vars) {
        assert_close(
            &format!("agc.{k}"),
            grads.get(v).unwrap(),
            get(&f, &format!("agc.{k}.clipped")),
            1e-6,
        );
    }
    Ok(())
}

#[test]
fn non_finite_norm_is_returned_unscaled() -> R<()> {
    for bad in [f32::NAN, f32::INFINITY] {
        let a = Var::zeros(5, DType::F32, &Device::Cpu)?;
        let b = Var::zeros(3, DType::F32, &Device::Cpu)?;
        let ga = Tensor::new(&[1f32, 2., bad, 4., 5.], &Device::Cpu)?;
        let gb = Tensor::new(&[100f32, 200., 300.], &Device::Cpu)?;
        let mut grads = GradStore::default();
        grads.insert(a.as_tensor(), ga.clone());
        grads.insert(b.as_tensor(), gb.clone());
        let vars = [a.clone(), b.clone()];
        let n = clip_grad_norm(&mut grads, &vars, 1.0)?;
        assert!(
            if bad.is_nan() {
                n.is_nan()
            } else {
                n == f64::INFINITY
            },
            "{n}"
        );
        let m = clip_grad_norm_inf(&mut grads, &vars, 1.0)?;
        assert!(
            if bad.is_nan() {
                m.is_nan()
            } else {
                m == f64::INFINITY
            },
            "{m}"
        );
        assert_close("a untouched", grads.get(&a).unwrap(), &ga, 0.0);
        assert_eq!(vals(grads.get(&b).unwrap()), vals(&gb));
    }
    Ok(())
}

#[test]
fn half_precision_gradients() -> R<()> {
    let g32 = (big_grad(1.0)?.narrow(0, 0, 100)? * 0.01)?;
    for dtype in [DType::F16, DType::BF16] {
        let g = g32.to_dtype(dtype)?;
        let exact = g
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .sqrt()?
            .to_scalar::<f64>()?;
        let v = Var::zeros(g.shape(), dtype, &Device::Cpu)?;
        let mut grads = GradStore::default();
        grads.insert(v.as_tensor(), g.clone());
        let n = clip_grad_norm(&mut grads, std::slice::from_ref(&v), 0.5)?;
        assert!(
            (n - exact).abs() <= 1e-5 * exact,
            "{dtype:?}: {n} vs {exact}"
        );
        let out = grads.get(&v).unwrap();
        assert_eq!(out.dtype(), dtype);
        let after = grad_norm(&grads, std::slice::from_ref(&v))?;
        assert!((after - 0.5).abs() < 5e-3, "{dtype:?}: {after}");
        agc(&mut grads, std::slice::from_ref(&v), 0.01, 1e-3)?;
        assert_eq!(grads.get(&v).unwrap().dtype(), dtype);
    }
    Ok(())
}

#[test]
fn missing_and_repeated_parameters() -> R<()> {
    let a = Var::zeros(4, DType::F32, &Device::Cpu)?;
    let no_grad = Var::zeros(4, DType::F32, &Device::Cpu)?;
    let mut grads = GradStore::default();
    grads.insert(
        a.as_tensor(),
        Tensor::new(&[3f32, 0., 4., 0.], &Device::Cpu)?,
    );
    let n = clip_grad_norm(&mut grads, &[a.clone(), no_grad.clone(), a.clone()], 1.0)?;
    assert_eq!(n, 5.0);
    assert!(grads.get(&no_grad).is_none());
    let v = vals(grads.get(&a).unwrap());
    assert!(
        (v[0] - 0.6).abs() < 1e-6 && (v[2] - 0.8).abs() < 1e-6,
        "{v:?}"
    );
    assert_eq!(grad_norm(&grads, &[])?, 0.0);
    Ok(())
}

#[test]
fn gradients_from_backward() -> R<()> {
    // The usual flow: backward, clip, (optimizer step).
    let w = Var::new(&[[1f32, -2.], [3., 0.5]], &Device::Cpu)?;
    let loss = w.as_tensor().sqr()?.sum_all()?;
    let mut grads = loss.backward()?;
    let n = clip_grad_norm(&mut grads, std::slice::from_ref(&w), 1.0)?;
    assert!((n - 2.0 * (1.0f64 + 4. + 9. + 0.25).sqrt()).abs() < 1e-5);
    assert!((grad_norm(&grads, std::slice::from_ref(&w))? - 1.0).abs() < 1e-5);
    Ok(())
}

fn expect_err<T: std::fmt::Debug>(r: candle_tricks::Result<T>, block: &str, what: &str) {
    match r {
        Ok(v) => panic!("{block}: expected an error about {what}, got {v:?}"),
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains(block) && m.contains(what), "{m}");
        }
    }
}

#[test]
fn bad_input_errors() -> R<()> {
    let v = Var::zeros((2, 3), DType::F32, &Device::Cpu)?;
    let vars = std::slice::from_ref(&v);
    let mut grads = GradStore::default();
    grads.insert(
        v.as_tensor(),
        Tensor::ones((2, 3), DType::F32, &Device::Cpu)?,
    );
    expect_err(
        clip_grad_norm(&mut grads, vars, -1.0),
        "clip_grad_norm",
        "max_norm",
    );
    expect_err(
        clip_grad_norm(&mut grads, vars, f64::NAN),
        "clip_grad_norm",
        "max_norm",
    );
    expect_err(
        clip_grad_norm_inf(&mut grads, vars, f64::INFINITY),
        "clip_grad_norm_inf",
        "max_norm",
    );
    expect_err(
        clip_grad_value(&mut grads, vars, -0.1),
        "clip_grad_value",
        "clip_value",
    );
    expect_err(agc(&mut grads, vars, 0.0, 1e-3), "agc", "clipping");
    expect_err(agc(&mut grads, vars, 0.01, -1.0), "agc", "eps");
    grads.insert(v.as_tensor(), Tensor::ones(6, DType::F32, &Device::Cpu)?);
    expect_err(agc(&mut grads, vars, 0.01, 1e-3), "agc", "gradient");
    grads.insert(
        v.as_tensor(),
        Tensor::ones((2, 3), DType::U32, &Device::Cpu)?,
    );
    expect_err(
        clip_grad_norm(&mut grads, vars, 1.0),
        "clip_grad_norm",
        "dtype",
    );
    expect_err(
        clip_grad_value(&mut grads, vars, 1.0),
        "clip_grad_value",
        "dtype",
    );
    expect_err(grad_norm(&grads, vars), "grad_norm", "dtype");
    Ok(())
}
