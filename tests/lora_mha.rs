//! LoRA on `MultiHeadAttention` against peft's `lora.MultiheadAttention` (fixtures from
//! `tests/fixtures/gen_lora_mha.py`, peft 0.22 in float64, with and without bias; the attention
//! layer runs in f32 and half precision, so the checks are in f32). The gradients are those of
//! peft's forward pass (peft's own backward for this layer is off upstream of `out_proj`; see
//! the generator). Covered: forward and
//! gradients for self- and cross-attention, merge/unmerge, loading peft's adapter file, and a
//! fine-tuning step that leaves the frozen base bit-identical.

mod common;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use candle_tricks::attention::{multi_head_attention, MhaConfig, MhaWeights, MultiHeadAttention};
use candle_tricks::ops::AttentionMask;
use candle_tricks::transfer::{lora_multi_head_attention, LoraConfig, LoraMultiHeadAttention};
use common::{assert_close, field, fixtures, get, Fixtures, R};

const E: usize = 12;
const H: usize = 3;

/// peft's config of the fixtures: r = 4, α = 6.
fn cfg() -> LoraConfig {
    LoraConfig::default().with_r(4).with_lora_alpha(6.0)
}

fn base(f: &Fixtures, case: &str, dt: DType) -> R<MultiHeadAttention> {
    let t = |n: &str| field(f, case, n).to_dtype(dt);
    let opt = |n: &str| -> R<Option<Tensor>> {
        Ok(match f.get(&format!("{case}.{n}")) {
            Some(x) => Some(x.to_dtype(dt)?),
            None => None,
        })
    };
    let w = MhaWeights {
        in_proj_weight: Some(t("in_proj_weight")?),
        q_proj_weight: None,
        k_proj_weight: None,
        v_proj_weight: None,
        in_proj_bias: opt("in_proj_bias")?,
        out_proj_weight: t("out_proj.weight")?,
        out_proj_bias: opt("out_proj.bias")?,
    };
    let mcfg = MhaConfig::new(H).with_bias(case == "bias");
    Ok(MultiHeadAttention::new(E, w, mcfg)?)
}

fn layer(f: &Fixtures, case: &str, dt: DType) -> R<LoraMultiHeadAttention> {
    let t = |n: &str| field(f, case, n).to_dtype(dt);
    Ok(LoraMultiHeadAttention::new(
        base(f, case, dt)?,
        (t("in.lora_A")?, t("in.lora_B")?),
        (t("out.lora_A")?, t("out.lora_B")?),
        cfg(),
    )?)
}

#[test]
fn forward_and_gradients_match_peft() -> R<()> {
    let f = fixtures("lora_mha");
    for case in ["bias", "nobias"] {
        for (dt, tol) in [(DType::F32, 1e-5)] {
            let l = layer(&f, case, dt)?;
            for kind in ["self", "cross"] {
                let p = format!("{case}.{kind}");
                let what = |n: &str| format!("{p} {dt:?} {n}");
                let names: &[&str] = if kind == "self" {
                    &["x"]
                } else {
                    &["q", "k", "v"]
                };
                let inputs: Vec<Var> = names
                    .iter()
                    .map(|n| Var::from_tensor(&field(&f, &p, n).to_dtype(dt)?))
                    .collect::<Result<_, _>>()?;
                let qkv: Vec<&Tensor> = (0..3)
                    .map(|i| inputs[i.min(inputs.len() - 1)].as_tensor())
                    .collect();
                let y = l.forward_t(qkv[0], qkv[1], qkv[2], &AttentionMask::None, true)?;
                assert_close(&what("y"), &y, field(&f, &p, "y"), tol);
                let gy = field(&f, &p, "gy").to_dtype(dt)?;
                let grads = (&y * &gy)?.sum_all()?.backward()?;
                for (v, n) in inputs.iter().zip(names) {
                    let g = grads.get(v).expect("gradient wrt the input");
                    assert_close(
                        &what(&format!("g{n}")),
                        g,
                        field(&f, &p, &format!("g{n}")),
                        tol,
                    );
                }
                let vars = l.trainable_vars();
                let want = ["in.gA", "in.gB", "out.gA", "out.gB"];
                for (v, n) in vars.iter().zip(want) {
                    let g = grads.get(v).expect("gradient wrt the adapter");
                    assert_close(&what(n), g, field(&f, &p, n), tol);
                }
            }
        }
    }
    Ok(())
}

#[test]
fn merge_matches_peft_and_unmerge_restores() -> R<()> {
    let f = fixtures("lora_mha");
    for case in ["bias", "nobias"] {
        let mut l = layer(&f, case, DType::F32)?;
        let x = &field(&f, &format!("{case}.self"), "x").to_dtype(DType::F32)?;
        let y = l.forward(x)?;
        l.merge()?;
        assert!(l.is_merged());
        let merged = |n: &str| field(&f, case, &format!("merged.{n}"));
        assert_close(
            "merged in",
            l.in_proj_weight(),
            merged("in_proj_weight"),
            1e-6,
        );
        assert_close(
            "merged out",
            l.out_proj_weight(),
            merged("out_proj.weight"),
            1e-6,
        );
        // A merged layer computes the same function, here and in peft.
        assert_close("merged y", &l.forward(x)?, &y, 1e-6);
        assert_close("peft merged y", &l.forward(x)?, merged("y"), 1e-5);
        let plain = l.merged_attention()?;
        assert_close("merged_attention y", &plain.forward(x)?, &y, 1e-6);
        l.merge()?; // a no-op, as peft
        l.unmerge()?;
        assert!(!l.is_merged());
        let base = |n: &str| field(&f, case, n);
        assert_close(
            "unmerged in",
            l.in_proj_weight(),
            base("in_proj_weight"),
            1e-6,
        );
        assert_close(
            "unmerged out",
            l.out_proj_weight(),
            base("out_proj.weight"),
            1e-6,
        );
        assert_close("unmerged y", &l.forward(x)?, &y, 1e-6);
    }
    Ok(())
}

#[test]
fn merge_unmerge_f32_within_1e6() -> R<()> {
    let f = fixtures("lora_mha");
    let mut l = layer(&f, "bias", DType::F32)?;
    let (w_in, w_out) = (l.in_proj_weight().clone(), l.out_proj_weight().clone());
    let x = field(&f, "bias.self", "x").to_dtype(DType::F32)?;
    let y = l.forward(&x)?;
    l.merge()?;
    assert_close("f32 merged y", &l.forward(&x)?, &y, 1e-6);
    l.unmerge()?;
    assert_close("f32 unmerged in", l.in_proj_weight(), &w_in, 1e-6);
    assert_close("f32 unmerged out", l.out_proj_weight(), &w_out, 1e-6);
    Ok(())
}

#[test]
fn loads_peft_adapter_file() -> R<()> {
    let f = fixtures("lora_mha");
    let path = format!(
        "{}/tests/fixtures/lora_mha_adapter.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    // SAFETY: the fixture file is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu)? };
    let l = lora_multi_head_attention(
        base(&f, "bias", DType::F32)?,
        cfg(),
        vb.pp("base_model.model.attn"),
    )?;
    let x = field(&f, "bias.self", "x").to_dtype(DType::F32)?;
    assert_close(
        "adapter y",
        &l.forward(&x)?,
        field(&f, "bias.self", "y"),
        1e-5,
    );
    let want = ["in.lora_A", "in.lora_B", "out.lora_A", "out.lora_B"];
    for (v, n) in l.trainable_vars().iter().zip(want) {
        assert_close(n, v.as_tensor(), get(&f, &format!("bias.{n}")), 1e-7);
    }
    Ok(())
}

#[test]
fn init_as_peft_and_starts_at_base() -> R<()> {
    let dev = Device::Cpu;
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
    let mha = multi_head_attention(16, MhaConfig::new(2), vb)?;
    let adapters = VarMap::new();
    let vb = VarBuilder::from_varmap(&adapters, DType::F32, &dev);
    let l = lora_multi_head_attention(mha.clone(), LoraConfig::default(), vb)?;
    assert_eq!(
        adapters.all_vars().len(),
        4,
        "only the four adapter tensors"
    );
    let (a, b) = l.in_proj_lora();
    assert_eq!((a.dims(), b.dims()), (&[8, 16][..], &[48, 8][..]));
    // A uniform in ±1/√E, B zero.
    assert!(a.abs()?.max_all()?.to_scalar::<f32>()? <= 0.25);
    assert_eq!(b.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
    let x = Tensor::randn(0f32, 1., (2, 3, 16), &dev)?;
    assert_close("starts at base", &l.forward(&x)?, &mha.forward(&x)?, 1e-6);
    Ok(())
}

/// Must-hold 1: fine-tuning through `trainable_vars` leaves every base weight bit-identical,
/// even when the base was built from a `VarMap` whose vars carry gradients.
#[test]
fn fine_tuning_leaves_base_bit_identical() -> R<()> {
    let dev = Device::Cpu;
    let pretrained = VarMap::new();
    let vb = VarBuilder::from_varmap(&pretrained, DType::F32, &dev);
    let mha = multi_head_attention(16, MhaConfig::new(2), vb)?;
    let before: Vec<Tensor> = pretrained
        .all_vars()
        .iter()
        .map(|v| v.as_tensor().copy())
        .collect::<Result<_, _>>()?;
    let adapters = VarMap::new();
    let vb = VarBuilder::from_varmap(&adapters, DType::F32, &dev);
    let l = lora_multi_head_attention(mha, cfg(), vb)?;
    let vars = l.trainable_vars();
    let start: Vec<Tensor> = vars
        .iter()
        .map(|v| v.as_tensor().copy())
        .collect::<Result<_, _>>()?;
    let params = candle_nn::ParamsAdamW {
        lr: 1e-2,
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut opt = candle_nn::AdamW::new(vars.clone(), params)?;
    let x = Tensor::randn(0f32, 1., (2, 5, 16), &dev)?;
    for _ in 0..3 {
        let loss = l.forward(&x)?.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        for v in pretrained.all_vars() {
            assert!(grads.get(&v).is_none(), "the frozen base gets no gradient");
        }
        opt.step(&grads)?;
    }
    let bits = |t: &Tensor| -> R<Vec<u32>> {
        Ok(t.flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .map(|v| v.to_bits())
            .collect())
    };
    for (v, t) in pretrained.all_vars().iter().zip(&before) {
        assert_eq!(bits(v.as_tensor())?, bits(t)?);
    }
    for (v, t) in vars.iter().zip(&start) {
        assert_ne!(
            bits(v.as_tensor())?,
            bits(t)?,
            "every adapter tensor trains"
        );
    }
    Ok(())
}

#[test]
fn bad_config_and_layout_are_errors() -> R<()> {
    let dev = Device::Cpu;
    let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
    let mha = multi_head_attention(16, MhaConfig::new(2), vb)?;
    let fresh = || VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
    for c in [
        cfg().with_r(0),
        cfg().with_lora_alpha(0.0),
        cfg().with_lora_alpha(-1.0),
        cfg().with_lora_dropout(0.1),
    ] {
        let r = lora_multi_head_attention(mha.clone(), c, fresh());
        common::assert_err_names(r, "LoraMultiHeadAttention", "");
    }
    // Grouped-query heads have no packed in_proj_weight: peft has no LoRA for them either.
    let gqa_cfg = MhaConfig::new(2).with_num_kv_heads(Some(1));
    let gqa = multi_head_attention(16, gqa_cfg, fresh())?;
    let r = lora_multi_head_attention(gqa, cfg(), fresh());
    common::assert_err_names(r, "LoraMultiHeadAttention", "packed");
    // Adapter tensors of the wrong shape.
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &dev);
    let r = LoraMultiHeadAttention::new(
        mha,
        (z(&[4, 16])?, z(&[16, 4])?),
        (z(&[4, 16])?, z(&[16, 4])?),
        cfg(),
    );
    common::assert_err_names(r, "LoraMultiHeadAttention", "lora_B");
    Ok(())
}
