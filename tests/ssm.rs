//! Mamba: the causal convolution op, the block (parallel forward vs step-by-step decoding), the
//! language model against a plain-torch Mamba forward on a mamba-ssm-named checkpoint
//! (`tests/fixtures/gen_mamba.py`), gradient flow to every parameter, generation, and bad input.

mod common;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::ops::{causal_conv1d, causal_conv1d_reference};
use candle_tricks::ssm::{
    mamba_block, mamba_model, MambaBlock, MambaConfig, MambaModel, MambaModelConfig, Sampling,
};
use common::*;

fn randn(shape: &[usize], seed: u64) -> R<Tensor> {
    // A deterministic pseudo-random tensor (no dependency on candle's RNG).
    let n: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

fn block(cfg: MambaConfig) -> R<(VarMap, MambaBlock)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let b = mamba_block(cfg, vb)?;
    Ok((varmap, b))
}

fn model(cfg: MambaModelConfig) -> R<(VarMap, MambaModel)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let m = mamba_model(cfg, vb)?;
    Ok((varmap, m))
}

fn ids(b: usize, l: usize, vocab: u32, seed: u64) -> R<Tensor> {
    let v: Vec<u32> = (0..b * l)
        .map(|i| ((i as u64 * 7919 + seed * 104729) % vocab as u64) as u32)
        .collect();
    Ok(Tensor::from_vec(v, (b, l), &Device::Cpu)?)
}

// ---------------------------------------------------------------------------------------------
// causal_conv1d
// ---------------------------------------------------------------------------------------------

#[test]
fn causal_conv1d_matches_reference_and_f64_gradients() -> R<()> {
    for (k, silu) in [(4, true), (1, false), (3, false), (5, true)] {
        let x = randn(&[2, 5, 9], 1)?;
        let w = randn(&[5, 1, k], 2)?;
        let bias = randn(&[5], 3)?;
        let gy = randn(&[2, 5, 9], 4)?;
        let what = format!("causal_conv1d k{k} silu {silu}");
        let (x64, w64, b64, gy64) = (
            x.to_dtype(DType::F64)?,
            w.to_dtype(DType::F64)?,
            bias.to_dtype(DType::F64)?,
            gy.to_dtype(DType::F64)?,
        );
        let (y, g) = fwd_bwd_n(&[&x, &w, &bias], &gy, |t| {
            causal_conv1d(&t[0], &t[1], Some(&t[2]), silu)
        })?;
        let (yr, gr) = fwd_bwd_n(&[&x64, &w64, &b64], &gy64, |t| {
            causal_conv1d_reference(&t[0], &t[1], Some(&t[2]), silu)
        })?;
        assert_close(&format!("{what} y"), &y, &yr, 1e-5);
        for (i, name) in ["gx", "gw", "gb"].iter().enumerate() {
            assert_close(&format!("{what} {name}"), &g[i], &gr[i], 1e-5);
        }
        // The (D, K) weight layout gives the same result.
        let y2 = causal_conv1d(&x, &w.squeeze(1)?, Some(&bias), silu)?;
        assert_close(&format!("{what} (D, K)"), &y2, &y, 0.0);
    }
    // Against candle's own grouped conv1d with symmetric padding, first L outputs.
    let x = randn(&[1, 3, 7], 5)?;
    let w = randn(&[3, 1, 4], 6)?;
    let want = x.conv1d(&w, 3, 1, 1, 3)?.narrow(2, 0, 7)?;
    assert_close(
        "vs conv1d",
        &causal_conv1d(&x, &w, None, false)?,
        &want,
        1e-6,
    );
    Ok(())
}

#[test]
fn causal_conv1d_finite_differences_and_half() -> R<()> {
    let x = randn(&[1, 3, 6], 7)?;
    let w = randn(&[3, 1, 4], 8)?;
    let gy = randn(&[1, 3, 6], 9)?;
    check_fd2("causal_conv1d", (&x, &w, &gy), 1e-2, 2e-2, |x, w| {
        causal_conv1d(x, w, None, true)
    })?;
    for dt in [DType::F16, DType::BF16] {
        check_half_vs_f32("causal_conv1d", (&x, &w, &gy), dt, 3e-2, |x, w| {
            causal_conv1d(x, w, None, true)
        })?;
    }
    Ok(())
}

#[test]
fn causal_conv1d_bad_input() -> R<()> {
    let x = randn(&[2, 4, 8], 1)?;
    let w = randn(&[4, 1, 3], 2)?;
    let op = "causal_conv1d";
    assert_err_names(causal_conv1d(&x.get(0)?, &w, None, false), op, "input");
    assert_err_names(
        causal_conv1d(&x, &randn(&[5, 1, 3], 3)?, None, false),
        op,
        "weight",
    );
    assert_err_names(
        causal_conv1d(&x, &randn(&[4, 2, 3], 3)?, None, false),
        op,
        "weight",
    );
    assert_err_names(
        causal_conv1d(&x, &randn(&[4, 1, 3, 1], 3)?, None, false),
        op,
        "weight",
    );
    assert_err_names(
        causal_conv1d(
            &x,
            &Tensor::zeros((4, 1, 0), DType::F32, &Device::Cpu)?,
            None,
            false,
        ),
        op,
        "weight",
    );
    assert_err_names(
        causal_conv1d(&x, &w, Some(&randn(&[3], 4)?), false),
        op,
        "bias",
    );
    assert_err_names(
        causal_conv1d(
            &Tensor::zeros((2, 4, 0), DType::F32, &Device::Cpu)?,
            &w,
            None,
            false,
        ),
        op,
        "input",
    );
    assert_err_names(
        causal_conv1d(&x, &w.to_dtype(DType::F64)?, None, false),
        op,
        "weight",
    );
    assert_err_names(
        causal_conv1d(
            &x.to_dtype(DType::F64)?,
            &w.to_dtype(DType::F64)?,
            None,
            false,
        ),
        op,
        "input",
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Block: step-by-step decoding = parallel forward
// ---------------------------------------------------------------------------------------------

fn check_block_steps(cfg: MambaConfig, l: usize) -> R<()> {
    let (_vm, b) = block(cfg)?;
    let x = randn(&[2, l, cfg.d_model], 11)?;
    let y = b.forward(&x)?;
    assert_eq!(y.dims(), x.dims());
    let mut state = b.zero_state(2)?;
    let mut steps = Vec::new();
    for t in 0..l {
        steps.push(b.step(&x.narrow(1, t, 1)?.squeeze(1)?, &mut state)?);
    }
    let ys = Tensor::stack(&steps, 1)?;
    assert_close(&format!("block steps {cfg:?}"), &ys, &y, 1e-5);
    // The parallel forward's final state is the state after the last step.
    let (y2, s2) = b.forward_with_state(&x)?;
    assert_close("forward_with_state y", &y2, &y, 0.0);
    assert_close("ssm state", &s2.ssm, &state.ssm, 1e-5);
    assert_close("conv state", &s2.conv, &state.conv, 1e-6);
    Ok(())
}

#[test]
fn block_step_equals_parallel_forward() -> R<()> {
    check_block_steps(MambaConfig::new(16), 13)?;
    // Short sequence (L < d_conv), odd sizes, explicit rank, biases, conv width 1 and 2.
    check_block_steps(MambaConfig::new(12).with_d_state(5).with_bias(true), 2)?;
    check_block_steps(
        MambaConfig::new(8)
            .with_d_conv(1)
            .with_expand(3)
            .with_dt_rank(3)
            .with_conv_bias(false),
        7,
    )?;
    check_block_steps(MambaConfig::new(8).with_d_conv(2).with_d_state(40), 9)?;
    // The LTI ablation.
    check_block_steps(MambaConfig::new(16).with_lti(true), 11)?;
    Ok(())
}

#[test]
fn block_prefill_then_steps() -> R<()> {
    let cfg = MambaConfig::new(16);
    let (_vm, b) = block(cfg)?;
    let x = randn(&[1, 10, 16], 12)?;
    let y = b.forward(&x)?;
    for split in [1, 3, 6] {
        let (_, mut state) = b.forward_with_state(&x.narrow(1, 0, split)?)?;
        for t in split..10 {
            let yt = b.step(&x.narrow(1, t, 1)?.squeeze(1)?, &mut state)?;
            assert_close(
                &format!("prefill {split} step {t}"),
                &yt,
                &y.narrow(1, t, 1)?.squeeze(1)?,
                1e-5,
            );
        }
    }
    Ok(())
}

#[test]
fn block_initialisation() -> R<()> {
    let cfg = MambaConfig::new(32);
    let (vm, b) = block(cfg)?;
    let w = b.weights();
    // S4D-real: A_log[d, n] = ln(n + 1) for every channel.
    let a = w.a_log.to_vec2::<f32>()?;
    for row in &a {
        for (n, v) in row.iter().enumerate() {
            assert!((v - ((n + 1) as f32).ln()).abs() < 1e-6);
        }
    }
    // softplus(dt_proj.bias) lies in [dt_min, dt_max].
    let bias = w.dt_proj_bias.to_vec1::<f32>()?;
    for v in bias {
        let dt = (1.0 + v.exp()).ln();
        assert!((0.001 * 0.999..=0.1 * 1.001).contains(&dt), "dt {dt}");
    }
    assert_eq!(w.d.to_vec1::<f32>()?, vec![1.0; 64]);
    // mamba-ssm's parameter names and shapes.
    let data = vm.data().lock().map_err(|e| e.to_string())?;
    let mut names: Vec<(String, Vec<usize>)> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    names.sort();
    let want = [
        ("A_log", vec![64, 16]),
        ("D", vec![64]),
        ("conv1d.bias", vec![64]),
        ("conv1d.weight", vec![64, 1, 4]),
        ("dt_proj.bias", vec![64]),
        ("dt_proj.weight", vec![64, 2]),
        ("in_proj.weight", vec![128, 32]),
        ("out_proj.weight", vec![32, 64]),
        ("x_proj.weight", vec![34, 64]),
    ];
    let want: Vec<(String, Vec<usize>)> = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(names, want);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

fn tiny_model_cfg() -> MambaModelConfig {
    MambaModelConfig::new(32, 2, MambaConfig::new(16))
}

#[test]
fn model_matches_torch_mamba() -> R<()> {
    let f = fixtures("mamba");
    let ids = get(&f, "input_ids").to_dtype(DType::U32)?;
    let want = get(&f, "logits");
    for with_head in [true, false] {
        let ts = f
            .iter()
            .filter(|(k, _)| k.as_str() != "input_ids" && k.as_str() != "logits")
            .filter(|(k, _)| with_head || k.as_str() != "lm_head.weight")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let vb = VarBuilder::from_tensors(ts, DType::F32, &Device::Cpu);
        let m = mamba_model(tiny_model_cfg(), vb)?;
        let logits = m.forward(&ids)?;
        assert_close(
            &format!("logits (lm_head {with_head})"),
            &logits,
            want,
            1e-4,
        );
        // And by decoding steps from a zero state.
        let mut state = m.zero_state(2)?;
        for t in 0..12 {
            let lt = m.step(&ids.narrow(1, t, 1)?.squeeze(1)?, &mut state)?;
            assert_close(
                &format!("step {t}"),
                &lt,
                &want.narrow(1, t, 1)?.squeeze(1)?,
                1e-4,
            );
        }
    }
    // A checkpoint with a wrongly shaped tensor is rejected (candle names the tensor).
    let mut ts: std::collections::HashMap<String, Tensor> = f.clone();
    ts.insert(
        "backbone.layers.1.mixer.A_log".into(),
        Tensor::zeros((32, 8), DType::F32, &Device::Cpu)?,
    );
    let vb = VarBuilder::from_tensors(ts, DType::F32, &Device::Cpu);
    let r = mamba_model(tiny_model_cfg(), vb);
    assert_err("bad checkpoint", r, &["A_log"]);
    Ok(())
}

#[test]
fn model_step_and_prefill_equal_parallel_forward() -> R<()> {
    for lti in [false, true] {
        let cfg = MambaModelConfig::new(20, 3, MambaConfig::new(12).with_d_state(6).with_lti(lti));
        let (_vm, m) = model(cfg)?;
        let x = ids(2, 9, 20, 3)?;
        let logits = m.forward(&x)?;
        assert_eq!(logits.dims(), &[2, 9, 20]);
        let (pl, mut state) = m.prefill(&x.narrow(1, 0, 4)?)?;
        assert_close("prefill logits", &pl, &logits.narrow(1, 0, 4)?, 1e-5);
        for t in 4..9 {
            let lt = m.step(&x.narrow(1, t, 1)?.squeeze(1)?, &mut state)?;
            assert_close(
                &format!("lti {lti} step {t}"),
                &lt,
                &logits.narrow(1, t, 1)?.squeeze(1)?,
                1e-5,
            );
        }
    }
    Ok(())
}

#[test]
fn generate_greedy_and_sampled() -> R<()> {
    let (_vm, m) = model(tiny_model_cfg())?;
    let prompt = ids(2, 5, 32, 1)?;
    let new = m.generate(&prompt, 6, Sampling::Greedy)?;
    assert_eq!(new.dims(), &[2, 6]);
    // Greedy = argmax of the full parallel forward, token after token.
    let mut seq = prompt.clone();
    for _ in 0..6 {
        let l = seq.dim(1)?;
        let next = m.forward(&seq)?.narrow(1, l - 1, 1)?.argmax(2)?;
        seq = Tensor::cat(&[&seq, &next], 1)?;
    }
    assert_eq!(
        new.to_vec2::<u32>()?,
        seq.narrow(1, 5, 6)?.to_vec2::<u32>()?
    );
    // Sampling is reproducible from the seed and stays in the vocabulary.
    let s = Sampling::Temperature {
        temperature: 1.5,
        seed: 7,
    };
    let a = m.generate(&prompt, 8, s)?.to_vec2::<u32>()?;
    let b = m.generate(&prompt, 8, s)?.to_vec2::<u32>()?;
    assert_eq!(a, b);
    assert!(a.iter().flatten().all(|&t| t < 32));
    assert_eq!(m.generate(&prompt, 0, Sampling::Greedy)?.dims(), &[2, 0]);
    Ok(())
}

fn check_all_grads(lti: bool) -> R<()> {
    let cfg = MambaModelConfig::new(16, 2, MambaConfig::new(8).with_lti(lti).with_bias(true));
    let (vm, m) = model(cfg)?;
    let x = ids(2, 7, 16, 5)?;
    let logits = m.forward(&x)?;
    let gy = randn(logits.dims(), 21)?;
    let grads = (logits * gy)?.sum_all()?.backward()?;
    let data = vm.data().lock().map_err(|e| e.to_string())?;
    assert!(data.len() >= 20, "{} parameters", data.len());
    for (name, var) in data.iter() {
        let g = grads
            .get(var.as_tensor())
            .ok_or(format!("lti {lti}: no gradient for {name}"))?;
        let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
        assert!(
            norm > 0.0 && norm.is_finite(),
            "lti {lti}: gradient of {name} has norm {norm}"
        );
    }
    Ok(())
}

#[test]
fn gradients_reach_every_parameter() -> R<()> {
    check_all_grads(false)?;
    check_all_grads(true)
}

#[test]
fn block_input_gradient_matches_finite_differences() -> R<()> {
    // The block's input gradient (through our conv and scan kernels and every projection)
    // against central finite differences of the forward.
    let cfg = MambaConfig::new(8).with_d_state(4);
    let (_vm, b) = block(cfg)?;
    let x = randn(&[1, 5, 8], 31)?;
    let gy = randn(&[1, 5, 8], 32)?;
    let (_, gx) = fwd_bwd1(&x, &gy, |x| b.forward(x))?;
    let fd = finite_diff(&x, &gy, 1e-2, |x| b.forward(x))?;
    assert_matches_fd("block dx", &gx, &fd, 2e-2)
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_config_and_input() -> R<()> {
    let vb = || VarBuilder::zeros(DType::F32, &Device::Cpu);
    let blk = "MambaBlock";
    let bad = [
        (MambaConfig::new(0), "d_model"),
        (MambaConfig::new(16).with_d_state(0), "d_state"),
        (MambaConfig::new(16).with_d_conv(0), "d_conv"),
        (MambaConfig::new(16).with_expand(0), "expand"),
        (MambaConfig::new(16).with_dt_rank(0), "dt_rank"),
        (MambaConfig::new(16).with_dt_range(-0.1, 0.1), "dt_min"),
        (MambaConfig::new(16).with_dt_range(0.1, 0.01), "dt_max"),
        (
            MambaConfig::new(16).with_dt_range(0.001, f64::NAN),
            "dt_max",
        ),
        (
            MambaConfig::new(16).with_dt_init_floor(-1.0),
            "dt_init_floor",
        ),
    ];
    for (cfg, needle) in bad {
        assert_err_names(cfg.validate(), blk, needle);
        assert_err_names(mamba_block(cfg, vb()), blk, needle);
    }
    let mm = "MambaModel";
    let m = MambaConfig::new(16);
    assert_err_names(
        mamba_model(MambaModelConfig::new(0, 2, m), vb()),
        mm,
        "vocab_size",
    );
    assert_err_names(
        mamba_model(MambaModelConfig::new(8, 0, m), vb()),
        mm,
        "n_layer",
    );
    assert_err_names(
        mamba_model(MambaModelConfig::new(8, 1, m).with_norm_eps(0.0), vb()),
        mm,
        "norm_eps",
    );
    assert_err_names(
        mamba_model(MambaModelConfig::new(8, 1, m.with_d_state(0)), vb()),
        blk,
        "d_state",
    );

    // Block inputs.
    let (_vm, b) = block(MambaConfig::new(16))?;
    let x = randn(&[2, 5, 16], 1)?;
    assert_err_names(b.forward(&randn(&[2, 5, 15], 1)?), blk, "input");
    assert_err_names(b.forward(&randn(&[5, 16], 1)?), blk, "input");
    assert_err_names(
        b.forward(&Tensor::zeros((2, 0, 16), DType::F32, &Device::Cpu)?),
        blk,
        "input",
    );
    assert_err_names(b.forward(&x.to_dtype(DType::F64)?), blk, "input");
    let mut st = b.zero_state(2)?;
    assert_err_names(b.step(&x, &mut st), blk, "input");
    assert_err_names(b.step(&randn(&[2, 15], 1)?, &mut st), blk, "input");
    let mut st3 = b.zero_state(3)?;
    assert_err_names(b.step(&randn(&[2, 16], 1)?, &mut st3), blk, "state");

    // Block parameters of the wrong shape through `new`.
    let mut w = b.weights().clone();
    w.a_log = Tensor::zeros((32, 8), DType::F32, &Device::Cpu)?;
    assert_err_names(MambaBlock::new(w, MambaConfig::new(16)), blk, "A_log");
    let mut w = b.weights().clone();
    w.lti_b = Some(Tensor::zeros(16, DType::F32, &Device::Cpu)?);
    assert_err_names(MambaBlock::new(w, MambaConfig::new(16)), blk, "B");
    let w = b.weights().clone();
    assert_err_names(
        MambaBlock::new(w, MambaConfig::new(16).with_lti(true)),
        blk,
        "x_proj",
    );

    // Model inputs.
    let (_vm, m) = model(tiny_model_cfg())?;
    let good = ids(2, 4, 32, 0)?;
    assert_err_names(m.forward(&good.to_dtype(DType::F32)?), mm, "token ids");
    assert_err_names(m.forward(&good.flatten_all()?), mm, "token ids");
    let big = Tensor::new(&[[1u32, 32]], &Device::Cpu)?;
    assert_err_names(m.forward(&big), mm, "out of range");
    assert_err_names(
        m.forward(&Tensor::zeros((1, 0), DType::U32, &Device::Cpu)?),
        mm,
        "token ids",
    );
    let mut st = m.zero_state(2)?;
    assert_err_names(m.step(&good, &mut st), mm, "token ids");
    let (_vm3, m3) = model(MambaModelConfig::new(32, 3, MambaConfig::new(16)))?;
    assert_err_names(
        m3.step(&good.narrow(1, 0, 1)?.squeeze(1)?, &mut st),
        mm,
        "layers",
    );
    let s = Sampling::Temperature {
        temperature: 0.0,
        seed: 1,
    };
    assert_err_names(m.generate(&good, 2, s), mm, "temperature");
    Ok(())
}
