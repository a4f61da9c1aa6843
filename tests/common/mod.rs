//! Helpers shared by the integration tests: fixture loading, tolerant comparisons, forward +
//! backward runs, finite differences, half-precision checks and bad-input assertions.

// Each test crate uses a different subset.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::{Debug, Display};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;

/// Result type of the tests.
pub type R<T> = Result<T, Box<dyn std::error::Error>>;

/// Fixture tensors by name.
pub type Fixtures = HashMap<String, Tensor>;

/// Loads `tests/fixtures/<family>.safetensors` (written by `gen_<family>.py`).
pub fn fixtures(family: &str) -> Fixtures {
    let path = format!(
        "{}/tests/fixtures/{family}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("fixture file {path}: {e}"))
}

/// The fixture tensor `key`.
pub fn get<'a>(f: &'a Fixtures, key: &str) -> &'a Tensor {
    f.get(key)
        .unwrap_or_else(|| panic!("missing fixture {key}"))
}

/// The fixture tensor `<case>.<what>`.
pub fn field<'a>(f: &'a Fixtures, case: &str, what: &str) -> &'a Tensor {
    get(f, &format!("{case}.{what}"))
}

/// A VarBuilder (f32) holding the fixture's `block.weight` and `block.bias` under
/// `<prefix>.weight` and `<prefix>.bias` (PyTorch's state-dict names).
pub fn block_vb(f: &Fixtures, prefix: &str) -> VarBuilder<'static> {
    let ts = ["weight", "bias"]
        .map(|n| (format!("{prefix}.{n}"), field(f, "block", n).clone()))
        .into_iter()
        .collect();
    VarBuilder::from_tensors(ts, DType::F32, &Device::Cpu)
}

/// Max |a - b| / (1 + max |b|), in f64.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let err = || -> candle_core::Result<f64> {
        let a = a.to_dtype(DType::F64)?;
        let b = b.to_dtype(DType::F64)?;
        let diff = (&a - &b)?.abs()?.max_all()?.to_scalar::<f64>()?;
        let scale = b.abs()?.max_all()?.to_scalar::<f64>()?;
        Ok(diff / (1.0 + scale))
    };
    err().expect("rel_err")
}

/// Asserts `rel_err(a, b) <= tol`.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f64) {
    let e = rel_err(a, b);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.1e}");
}

/// Output and gradients `(y, gx, gw)` of a two-input op.
pub type Yg = (Tensor, Tensor, Tensor);

/// `assert_close` on each of `y`, `gx`, `gw`.
pub fn assert_yg_close(what: &str, got: &Yg, want: &Yg, tol: f64) {
    assert_close(&format!("{what} y"), &got.0, &want.0, tol);
    assert_close(&format!("{what} gx"), &got.1, &want.1, tol);
    assert_close(&format!("{what} gw"), &got.2, &want.2, tol);
}

/// The fixture's inputs `(x, w, gy)` of `case`.
pub fn fixture_xwgy<'a>(f: &'a Fixtures, case: &str) -> (&'a Tensor, &'a Tensor, &'a Tensor) {
    (
        field(f, case, "x"),
        field(f, case, "w"),
        field(f, case, "gy"),
    )
}

/// The fixture's `(y, gx, gw)` of `case`.
pub fn fixture_yg(f: &Fixtures, case: &str) -> Yg {
    let t = |what| field(f, case, what).clone();
    (t("y"), t("gx"), t("gw"))
}

/// Runs `op` on Vars made from `inputs`; returns `y` and the gradient of `sum(y * gy)` with
/// respect to each input.
pub fn fwd_bwd_n<E: std::error::Error + 'static>(
    inputs: &[&Tensor],
    gy: &Tensor,
    op: impl Fn(&[Tensor]) -> Result<Tensor, E>,
) -> R<(Tensor, Vec<Tensor>)> {
    let vars = inputs
        .iter()
        .map(|t| Var::from_tensor(t))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = op(&ts)?;
    let grads = (&y * gy.to_dtype(y.dtype())?)?.sum_all()?.backward()?;
    let gs = ts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            grads
                .get(t)
                .cloned()
                .ok_or(format!("no gradient for input {i}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((y, gs))
}

/// [`fwd_bwd_n`] for one input: `(y, gx)`.
pub fn fwd_bwd1<E: std::error::Error + 'static>(
    x: &Tensor,
    gy: &Tensor,
    op: impl Fn(&Tensor) -> Result<Tensor, E>,
) -> R<(Tensor, Tensor)> {
    let (y, mut g) = fwd_bwd_n(&[x], gy, |t| op(&t[0]))?;
    Ok((y, g.remove(0)))
}

/// [`fwd_bwd_n`] for an input and a weight: `(y, gx, gw)`.
pub fn fwd_bwd2<E: std::error::Error + 'static>(
    x: &Tensor,
    w: &Tensor,
    gy: &Tensor,
    op: impl Fn(&Tensor, &Tensor) -> Result<Tensor, E>,
) -> R<Yg> {
    let (y, mut g) = fwd_bwd_n(&[x, w], gy, |t| op(&t[0], &t[1]))?;
    let gw = g.remove(1);
    Ok((y, g.remove(0), gw))
}

/// Central finite differences (step `eps` on each f32 element of `x`) of `sum(op(x) * gy)`,
/// the loss taken in f64; an f64 tensor shaped like `x`.
pub fn finite_diff<E: std::error::Error + 'static>(
    x: &Tensor,
    gy: &Tensor,
    eps: f32,
    op: impl Fn(&Tensor) -> Result<Tensor, E>,
) -> R<Tensor> {
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let gy = gy.to_dtype(DType::F64)?;
    let loss = |v: Vec<f32>| -> R<f64> {
        let y = op(&Tensor::from_vec(v, x.shape(), x.device())?)?;
        Ok((y.to_dtype(DType::F64)? * &gy)?
            .sum_all()?
            .to_scalar::<f64>()?)
    };
    let mut g = Vec::with_capacity(xs.len());
    for i in 0..xs.len() {
        let mut plus = xs.clone();
        plus[i] += eps;
        let mut minus = xs.clone();
        minus[i] -= eps;
        g.push((loss(plus)? - loss(minus)?) / (2.0 * eps as f64));
    }
    Ok(Tensor::from_vec(g, x.shape(), x.device())?)
}

/// Element by element, `|fd - g| < tol * (1 + |fd|)` (finite differences `fd` against an
/// analytic gradient `g`).
pub fn assert_matches_fd(what: &str, g: &Tensor, fd: &Tensor, tol: f64) -> R<()> {
    let g = g.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let fd = fd.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    for (i, (&g, &fd)) in g.iter().zip(&fd).enumerate() {
        let err = (fd - g).abs();
        assert!(err < tol * (1.0 + fd.abs()), "{what}[{i}]: fd {fd} vs {g}");
    }
    Ok(())
}

/// `op`'s gradients `(gx, gw)` of `sum(op(x, w) * gy)` against central finite differences
/// (step `eps`), element by element within `tol` (see [`assert_matches_fd`]).
pub fn check_fd2<E: std::error::Error + 'static>(
    what: &str,
    (x, w, gy): (&Tensor, &Tensor, &Tensor),
    eps: f32,
    tol: f64,
    op: impl Fn(&Tensor, &Tensor) -> Result<Tensor, E>,
) -> R<()> {
    let (_, gx, gw) = fwd_bwd2(x, w, gy, &op)?;
    let fdx = finite_diff(x, gy, eps, |x| op(x, w))?;
    assert_matches_fd(&format!("{what} dx"), &gx, &fdx, tol)?;
    let fdw = finite_diff(w, gy, eps, |w| op(x, w))?;
    assert_matches_fd(&format!("{what} dw"), &gw, &fdw, tol)
}

/// `op`'s output and gradients against candle autograd through `reference` in f64.
pub fn check_vs_f64_reference<E1, E2>(
    what: &str,
    (x, w, gy): (&Tensor, &Tensor, &Tensor),
    tol: f64,
    op: impl Fn(&Tensor, &Tensor) -> Result<Tensor, E1>,
    reference: impl Fn(&Tensor, &Tensor) -> Result<Tensor, E2>,
) -> R<()>
where
    E1: std::error::Error + 'static,
    E2: std::error::Error + 'static,
{
    let got = fwd_bwd2(x, w, gy, op)?;
    let up = |t: &Tensor| t.to_dtype(DType::F64);
    let want = fwd_bwd2(&up(x)?, &up(w)?, &up(gy)?, reference)?;
    assert_yg_close(what, &got, &want, tol);
    Ok(())
}

/// Rounds `(x, w, gy)` to `dtype`, runs `op` forward and backward on them, checks that the
/// results keep `dtype` and match the f32 run on the same rounded values within `tol`; returns
/// the half-precision `y`.
pub fn check_half_vs_f32<E: std::error::Error + 'static>(
    what: &str,
    (x, w, gy): (&Tensor, &Tensor, &Tensor),
    dtype: DType,
    tol: f64,
    op: impl Fn(&Tensor, &Tensor) -> Result<Tensor, E>,
) -> R<Tensor> {
    // Round the inputs first so both runs see the same values.
    let (xh, wh, gyh) = (x.to_dtype(dtype)?, w.to_dtype(dtype)?, gy.to_dtype(dtype)?);
    let half = fwd_bwd2(&xh, &wh, &gyh, &op)?;
    let dtypes = (half.0.dtype(), half.1.dtype(), half.2.dtype());
    assert_eq!(dtypes, (dtype, dtype, dtype), "{what}");
    let up = |t: &Tensor| t.to_dtype(DType::F32);
    let full = fwd_bwd2(&up(&xh)?, &up(&wh)?, &up(&gyh)?, &op)?;
    assert_yg_close(&format!("{what} {dtype:?}"), &half, &full, tol);
    Ok(half.0)
}

/// Asserts that `r` is an error whose message contains each of `needles`; returns the message.
pub fn assert_err<T: Debug, E: Display>(what: &str, r: Result<T, E>, needles: &[&str]) -> String {
    match r {
        Ok(v) => panic!("{what}: expected an error naming {needles:?}, got Ok({v:?})"),
        Err(e) => {
            let msg = e.to_string();
            for n in needles {
                assert!(msg.contains(n), "{what}: error does not mention {n}: {msg}");
            }
            msg
        }
    }
}

/// [`assert_err`] for an error naming `block` and mentioning `needle`.
pub fn assert_err_names<T: Debug, E: Display>(r: Result<T, E>, block: &str, needle: &str) {
    assert_err(needle, r, &[block, needle]);
}
