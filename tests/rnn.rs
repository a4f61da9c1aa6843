//! `rnn::Lstm` / `rnn::Gru` and the fused recurrence against PyTorch (`gen_rnn.py`), the
//! plain-tensor composition in f64, finite differences, half precision and bad input.

mod common;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::ops::{
    gru_recurrence, gru_recurrence_reference, lstm_recurrence, lstm_recurrence_reference,
    with_backend, Backend, RecurrenceConfig,
};
use candle_tricks::rnn::{gru, lengths_from_tensor, lstm, RnnConfig};
use common::*;

/// The config each fixture case was generated with.
fn case_config(case: &str) -> RnnConfig {
    let c = RnnConfig::default();
    match case.split_once('_').map(|p| p.1) {
        Some("deep") => c
            .with_num_layers(2)
            .with_bidirectional(true)
            .with_batch_first(true),
        Some("nobias") => c.with_bias(false),
        Some("lengths") => c.with_num_layers(2).with_bidirectional(true),
        Some("lengths_bf") => c.with_bidirectional(true).with_batch_first(true),
        _ => c,
    }
}

const CASES: [&str; 5] = ["basic", "deep", "nobias", "lengths", "lengths_bf"];

/// Runs fixture `case` (`lstm_…` / `gru_…`) through our block and compares outputs and every
/// gradient with PyTorch's.
fn check_case(f: &Fixtures, case: &str) -> R<()> {
    let dev = Device::Cpu;
    let f32t = |what: &str| field(f, case, what).to_dtype(DType::F32);
    let is_lstm = case.starts_with("lstm");
    let x = Var::from_tensor(&f32t("x")?)?;
    let inp = x.dim(2)?;
    let cfg = case_config(case);
    let gy = f32t("gy")?;
    let hidden = gy.dim(2)? / cfg.directions();
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let prefix = format!("{case}.net.");
    let names: Vec<String> = f
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
        .collect();
    enum Net {
        L(candle_tricks::rnn::Lstm),
        G(candle_tricks::rnn::Gru),
    }
    let net = if is_lstm {
        Net::L(lstm(inp, hidden, cfg, vb)?)
    } else {
        Net::G(gru(inp, hidden, cfg, vb)?)
    };
    for n in &names {
        varmap.set_one(n, field(f, case, &format!("net.{n}")).to_dtype(DType::F32)?)?;
    }
    let h0 = f
        .contains_key(&format!("{case}.h0"))
        .then(|| f32t("h0"))
        .transpose()?;
    let h0 = h0.map(|t| Var::from_tensor(&t)).transpose()?;
    let c0 = f
        .contains_key(&format!("{case}.c0"))
        .then(|| f32t("c0"))
        .transpose()?;
    let c0 = c0.map(|t| Var::from_tensor(&t)).transpose()?;
    let lengths = f
        .get(&format!("{case}.lengths"))
        .map(lengths_from_tensor)
        .transpose()?;
    let (y, h_n, c_n) = match &net {
        Net::L(n) => {
            let st = h0
                .as_ref()
                .zip(c0.as_ref())
                .map(|(h, c)| (h.as_tensor(), c.as_tensor()));
            let (y, (h, c)) = n.forward(&x, st, lengths.as_deref())?;
            (y, h, Some(c))
        }
        Net::G(n) => {
            let (y, h) = n.forward(&x, h0.as_ref().map(|v| v.as_tensor()), lengths.as_deref())?;
            (y, h, None)
        }
    };
    let mut loss = ((&y * &gy)?.sum_all()? + (&h_n * f32t("ghn")?)?.sum_all()?)?;
    if let Some(c) = &c_n {
        loss = (loss + (c * f32t("gcn")?)?.sum_all()?)?;
    }
    let grads = loss.backward()?;
    let tol = 1e-5;
    assert_close(&format!("{case} y"), &y, &f32t("y")?, tol);
    assert_close(&format!("{case} h_n"), &h_n, &f32t("h_n")?, tol);
    if let Some(c) = &c_n {
        assert_close(&format!("{case} c_n"), c, &f32t("c_n")?, tol);
    }
    let g = |t: &Tensor| grads.get(t).cloned().ok_or("missing gradient");
    assert_close(&format!("{case} gx"), &g(&x)?, &f32t("gx")?, tol);
    if let Some(h0) = &h0 {
        assert_close(&format!("{case} gh0"), &g(h0)?, &f32t("gh0")?, tol);
    }
    if let Some(c0) = &c0 {
        assert_close(&format!("{case} gc0"), &g(c0)?, &f32t("gc0")?, tol);
    }
    let vars = varmap.data().lock().map_err(|_| "poisoned")?.clone();
    assert_eq!(vars.len(), names.len(), "{case}: parameter count");
    for n in &names {
        let v = vars.get(n).ok_or("missing parameter")?;
        let want = f32t(&format!("grad.{n}"))?;
        assert_close(&format!("{case} grad {n}"), &g(v)?, &want, tol);
    }
    Ok(())
}

#[test]
fn lstm_matches_pytorch() -> R<()> {
    let f = fixtures("rnn");
    for c in CASES {
        check_case(&f, &format!("lstm_{c}"))?;
    }
    Ok(())
}

#[test]
fn gru_matches_pytorch() -> R<()> {
    let f = fixtures("rnn");
    for c in CASES {
        check_case(&f, &format!("gru_{c}"))?;
    }
    Ok(())
}

#[test]
fn composition_path_matches_pytorch() -> R<()> {
    let f = fixtures("rnn");
    with_backend(Backend::Composition, || -> R<()> {
        for c in ["lstm_lengths", "gru_lengths", "lstm_deep", "gru_lengths_bf"] {
            check_case(&f, c)?;
        }
        Ok(())
    })
}

fn randn(shape: &[usize], std: f32) -> R<Tensor> {
    Ok(Tensor::randn(0f32, std, shape, &Device::Cpu)?)
}

/// One op's inputs: `xproj`, `w_hh`, `b_hh`, `h0`, `c0` (LSTM) and a gradient per output.
struct OpCase {
    lstm: bool,
    inputs: Vec<Tensor>,
    grads: Vec<Tensor>,
}

fn op_case(lstm: bool, (l, b, h): (usize, usize, usize)) -> R<OpCase> {
    let g = if lstm { 4 } else { 3 };
    let mut inputs = vec![
        randn(&[l, b, g * h], 1.0)?,
        randn(&[g * h, h], 0.4)?,
        randn(&[g * h], 0.3)?,
        randn(&[b, h], 0.5)?,
    ];
    let mut grads = vec![randn(&[l, b, h], 1.0)?, randn(&[b, h], 1.0)?];
    if lstm {
        inputs.push(randn(&[b, h], 0.5)?);
        grads.push(randn(&[b, h], 1.0)?);
    }
    Ok(OpCase {
        lstm,
        inputs,
        grads,
    })
}

/// The op (`reference`: its composition) on `t = [xproj, w_hh, b_hh, h0, (c0)]`; the outputs.
fn run_op(lstm: bool, t: &[Tensor], cfg: &RecurrenceConfig, reference: bool) -> R<Vec<Tensor>> {
    Ok(match (lstm, reference) {
        (true, false) => {
            let (y, h, c) = lstm_recurrence(&t[0], &t[1], Some(&t[2]), &t[3], &t[4], cfg)?;
            vec![y, h, c]
        }
        (true, true) => {
            let (y, h, c) =
                lstm_recurrence_reference(&t[0], &t[1], Some(&t[2]), &t[3], &t[4], cfg)?;
            vec![y, h, c]
        }
        (false, false) => {
            let (y, h) = gru_recurrence(&t[0], &t[1], Some(&t[2]), &t[3], cfg)?;
            vec![y, h]
        }
        (false, true) => {
            let (y, h) = gru_recurrence_reference(&t[0], &t[1], Some(&t[2]), &t[3], cfg)?;
            vec![y, h]
        }
    })
}

/// Outputs and the gradients of `Σ out_k · grads_k` wrt every input, with inputs and gradients
/// cast to `dt`.
fn fwd_bwd(c: &OpCase, cfg: &RecurrenceConfig, reference: bool, dt: DType) -> R<Vec<Tensor>> {
    let vars = c
        .inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(dt)?))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let outs = run_op(c.lstm, &ts, cfg, reference)?;
    let mut loss = Tensor::zeros((), dt, &Device::Cpu)?;
    for (o, g) in outs.iter().zip(&c.grads) {
        loss = (loss + (o * g.to_dtype(dt)?)?.sum_all()?)?;
    }
    let grads = loss.backward()?;
    let mut all = outs;
    for t in &ts {
        all.push(grads.get(t).cloned().ok_or("missing gradient")?);
    }
    Ok(all)
}

#[test]
fn kernel_matches_f64_reference_with_lengths_both_directions() -> R<()> {
    // Uneven sample blocks (B = 5), odd H, ragged lengths, both directions and cells.
    let lengths = [9, 4, 1, 9, 6];
    for lstm in [true, false] {
        let c = op_case(lstm, (9, 5, 19))?;
        for reverse in [false, true] {
            for lens in [None, Some(&lengths[..])] {
                let mut cfg = RecurrenceConfig::default().with_reverse(reverse);
                cfg.lengths = lens;
                let got = fwd_bwd(&c, &cfg, false, DType::F32)?;
                let want = fwd_bwd(&c, &cfg, true, DType::F64)?;
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let what = format!("lstm={lstm} reverse={reverse} lengths={lens:?} #{i}");
                    assert_close(&what, g, w, 1e-5);
                }
            }
        }
    }
    Ok(())
}

/// Central differences of the f64 composition's loss wrt every input element.
fn finite_differences(c: &OpCase, cfg: &RecurrenceConfig) -> R<Vec<Tensor>> {
    let up: Vec<Tensor> = c
        .inputs
        .iter()
        .map(|t| t.to_dtype(DType::F64))
        .collect::<candle_core::Result<_>>()?;
    let loss = |ts: &[Tensor]| -> R<f64> {
        let outs = run_op(c.lstm, ts, cfg, true)?;
        let mut s = 0.0;
        for (o, g) in outs.iter().zip(&c.grads) {
            s += (o * g.to_dtype(DType::F64)?)?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
        Ok(s)
    };
    let eps = 1e-6;
    let mut fds = Vec::new();
    for k in 0..up.len() {
        let v = up[k].flatten_all()?.to_vec1::<f64>()?;
        let mut g = Vec::with_capacity(v.len());
        for i in 0..v.len() {
            let at = |d: f64| -> R<f64> {
                let mut w = v.clone();
                w[i] += d;
                let mut ts = up.clone();
                ts[k] = Tensor::from_vec(w, up[k].shape(), &Device::Cpu)?;
                loss(&ts)
            };
            g.push((at(eps)? - at(-eps)?) / (2.0 * eps));
        }
        fds.push(Tensor::from_vec(g, up[k].shape(), &Device::Cpu)?);
    }
    Ok(fds)
}

#[test]
fn kernel_backward_matches_finite_differences() -> R<()> {
    let lengths = [5, 2, 4];
    for lstm in [true, false] {
        let c = op_case(lstm, (5, 3, 3))?;
        let cfg = RecurrenceConfig::default()
            .with_reverse(true)
            .with_lengths(&lengths);
        let got = fwd_bwd(&c, &cfg, false, DType::F32)?;
        let n_out = c.grads.len();
        let fds = finite_differences(&c, &cfg)?;
        for (k, fd) in fds.iter().enumerate() {
            assert_matches_fd(&format!("lstm={lstm} input {k}"), &got[n_out + k], fd, 1e-4)?;
        }
        // The f64 composition's own autograd agrees with the differences more tightly.
        let want = fwd_bwd(&c, &cfg, true, DType::F64)?;
        for (k, fd) in fds.iter().enumerate() {
            assert_matches_fd(
                &format!("f64 lstm={lstm} input {k}"),
                &want[n_out + k],
                fd,
                1e-7,
            )?;
        }
    }
    Ok(())
}

#[test]
fn half_precision_close_to_f32() -> R<()> {
    let lengths = [7, 3, 5, 7];
    for lstm in [true, false] {
        let c = op_case(lstm, (7, 4, 16))?;
        let cfg = RecurrenceConfig::default().with_lengths(&lengths);
        for (dt, tol) in [(DType::F16, 1e-2), (DType::BF16, 5e-2)] {
            // Round the inputs first so that both runs see the same values.
            let rounded = OpCase {
                lstm,
                inputs: c
                    .inputs
                    .iter()
                    .map(|t| t.to_dtype(dt)?.to_dtype(DType::F32))
                    .collect::<candle_core::Result<_>>()?,
                grads: c.grads.clone(),
            };
            let half = fwd_bwd(&rounded, &cfg, false, dt)?;
            let full = fwd_bwd(&rounded, &cfg, false, DType::F32)?;
            for (i, (h, f)) in half.iter().zip(&full).enumerate() {
                assert_eq!(h.dtype(), dt);
                assert_close(&format!("lstm={lstm} {dt:?} #{i}"), h, f, tol);
            }
        }
    }
    Ok(())
}

#[test]
fn module_dropout_and_inference() -> R<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let cfg = RnnConfig::default().with_num_layers(3).with_dropout(0.5);
    let net = lstm(6, 8, cfg, vb)?;
    let x = randn(&[5, 2, 6], 1.0)?;
    // Module = evaluation: deterministic, no dropout; forward_t(train) drops between layers.
    let a = Module::forward(&net, &x)?;
    let (b, _) = net.forward(&x, None, None)?;
    assert_eq!(rel_err(&a, &b), 0.0);
    let (t, _) = net.forward_t(&x, None, None, true)?;
    assert!(rel_err(&t, &a) > 1e-3);
    // Inference without any Var: no state is kept for a backward.
    let y = Tensor::randn(0f32, 1., (5, 2, 9), &dev)?;
    let w = Tensor::randn(0f32, 0.3, (9, 3), &dev)?;
    let h0 = Tensor::zeros((2, 3), DType::F32, &dev)?;
    let (o, _) = gru_recurrence(&y, &w, None, &h0, &RecurrenceConfig::default())?;
    let (r, _) = gru_recurrence_reference(&y, &w, None, &h0, &RecurrenceConfig::default())?;
    assert_close("gru inference", &o, &r, 1e-5);
    // PyTorch's initialisation bound 1/sqrt(H).
    let max = varmap
        .all_vars()
        .iter()
        .map(|v| v.as_tensor().abs()?.max_all()?.to_scalar::<f32>())
        .collect::<candle_core::Result<Vec<_>>>()?;
    assert!(max.iter().all(|&m| m <= 1.0 / 8f32.sqrt()));
    Ok(())
}

#[test]
fn bad_input_is_an_error() -> R<()> {
    let dev = Device::Cpu;
    let vb = || VarBuilder::zeros(DType::F32, &dev);
    let net = lstm(4, 3, RnnConfig::default(), vb())?;
    let gnet = gru(4, 3, RnnConfig::default().with_batch_first(true), vb())?;
    let x = randn(&[5, 2, 4], 1.0)?;
    assert_err_names(
        net.forward(&x, None, Some(&[6, 2])),
        "Lstm",
        "lengths[0] = 6",
    );
    assert_err_names(
        net.forward(&x, None, Some(&[5, 0])),
        "Lstm",
        "lengths[1] = 0",
    );
    assert_err_names(net.forward(&x, None, Some(&[5])), "Lstm", "lengths");
    assert_err_names(
        gnet.forward(&x, None, Some(&[6, 1, 1, 1, 1])),
        "Gru",
        "lengths[0] = 6",
    );
    assert_err_names(
        net.forward(&randn(&[5, 2, 3], 1.0)?, None, None),
        "Lstm",
        "input",
    );
    assert_err_names(
        net.forward(&randn(&[5, 4], 1.0)?, None, None),
        "Lstm",
        "input",
    );
    assert_err_names(
        net.forward(&randn(&[0, 2, 4], 1.0)?, None, None),
        "Lstm",
        "input",
    );
    let h0 = randn(&[1, 3, 3], 1.0)?;
    let c0 = randn(&[1, 2, 3], 1.0)?;
    assert_err_names(net.forward(&x, Some((&h0, &c0)), None), "Lstm", "h0");
    let h0 = randn(&[1, 2, 3], 1.0)?;
    assert_err_names(
        net.forward(&x, Some((&h0, &c0.to_dtype(DType::F16)?)), None),
        "Lstm",
        "c0",
    );
    assert_err_names(
        net.forward(&x.to_dtype(DType::F16)?, None, None),
        "Lstm",
        "input",
    );
    let bad = |cfg: RnnConfig| lstm(4, 3, cfg, vb());
    assert_err_names(
        bad(RnnConfig::default().with_num_layers(0)),
        "Lstm",
        "num_layers",
    );
    assert_err_names(
        bad(RnnConfig::default().with_dropout(1.0)),
        "Lstm",
        "dropout",
    );
    assert_err_names(
        bad(RnnConfig::default().with_dropout(f64::NAN)),
        "Lstm",
        "dropout",
    );
    assert_err_names(lstm(0, 3, RnnConfig::default(), vb()), "Lstm", "input_size");
    assert_err_names(gru(4, 0, RnnConfig::default(), vb()), "Gru", "hidden_size");
    let neg = Tensor::new(&[3i64, -1], &dev)?;
    assert_err_names(lengths_from_tensor(&neg), "rnn", "non-negative");
    let frac = Tensor::new(&[1.5f32], &dev)?;
    assert_err_names(lengths_from_tensor(&frac), "rnn", "non-negative");
    // The op itself: (L, B, 12) projections fit an LSTM with H = 3 and a GRU with H = 4.
    let xp = randn(&[5, 2, 12], 1.0)?;
    let (h3, h4) = (randn(&[2, 3], 1.0)?, randn(&[2, 4], 1.0)?);
    let cfg = RecurrenceConfig::default();
    let w9 = randn(&[9, 3], 1.0)?;
    assert_err_names(
        lstm_recurrence(&xp, &w9, None, &h3, &h3, &cfg),
        "lstm_recurrence",
        "w_hh",
    );
    let w12 = randn(&[12, 3], 1.0)?;
    assert_err_names(
        gru_recurrence(&xp, &w12, None, &h3, &cfg),
        "gru_recurrence",
        "w_hh",
    );
    let w = randn(&[12, 4], 1.0)?;
    let b = randn(&[11], 1.0)?;
    assert_err_names(
        gru_recurrence(&xp, &w, Some(&b), &h4, &cfg),
        "gru_recurrence",
        "b_hh",
    );
    assert_err_names(
        gru_recurrence(&xp, &w, None, &h3, &cfg),
        "gru_recurrence",
        "h0",
    );
    let lens = [5, 6];
    let bad_len = cfg.with_lengths(&lens);
    assert_err_names(
        gru_recurrence(&xp, &w, None, &h4, &bad_len),
        "gru_recurrence",
        "lengths[1] = 6",
    );
    let up = |t: &Tensor| t.to_dtype(DType::F64);
    let r = gru_recurrence(&up(&xp)?, &up(&w)?, None, &up(&h4)?, &cfg);
    assert_err_names(r, "gru_recurrence", "xproj");
    let r = gru_recurrence(&xp, &w.to_dtype(DType::BF16)?, None, &h4, &cfg);
    assert_err_names(r, "gru_recurrence", "w_hh");
    Ok(())
}

#[test]
fn new_from_weights_matches_the_loaded_block() -> R<()> {
    use candle_tricks::rnn::{Gru, Lstm};
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let cfg = RnnConfig::default()
        .with_num_layers(2)
        .with_bidirectional(true);
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let net = lstm(5, 4, cfg, vb.pp("a"))?;
    let again = Lstm::new(net.weights().to_vec(), cfg)?;
    let x = randn(&[6, 2, 5], 1.0)?;
    let (y, _) = net.forward(&x, None, Some(&[6, 3]))?;
    let (y2, _) = again.forward(&x, None, Some(&[6, 3]))?;
    assert_eq!(rel_err(&y, &y2), 0.0);
    let g = gru(5, 4, cfg, vb.pp("b"))?;
    assert!(Gru::new(g.weights().to_vec(), cfg).is_ok());
    // Wrong counts, shapes and bias presence.
    let one = RnnConfig::default();
    assert_err_names(Gru::new(g.weights().to_vec(), one), "Gru", "layers");
    assert_err_names(Lstm::new(g.weights().to_vec(), cfg), "Lstm", "weight_ih");
    let nobias = cfg.with_bias(false);
    assert_err_names(Lstm::new(net.weights().to_vec(), nobias), "Lstm", "bias_ih");
    Ok(())
}
