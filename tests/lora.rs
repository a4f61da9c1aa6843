//! LoRA and bottleneck adapters against peft (fixtures from `tests/fixtures/gen_lora.py`, peft
//! 0.22 in float64): forward and gradients, merge/unmerge, loading peft's adapter file, and a
//! fine-tuning step that leaves the frozen base bit-identical.

mod common;

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use candle_tricks::ops::Conv2dConfig;
use candle_tricks::transfer::{
    lora_conv2d, lora_linear, BottleneckAdapter, BottleneckAdapterConfig, LoraConfig, LoraConv2d,
    LoraLinear,
};
use common::{assert_close, field, fixtures, Fixtures, R};

/// peft's config of the fixtures: r = 4, α = 6.
fn cfg() -> LoraConfig {
    LoraConfig::default().with_r(4).with_lora_alpha(6.0)
}

/// The fixture's convolution: stride 2, padding 1, dilation 2.
fn conv_cfg() -> Conv2dConfig {
    Conv2dConfig::default()
        .with_stride(2)
        .with_padding(candle_tricks::conv::Padding::Explicit(1))
        .with_dilation(2)
}

fn linear_layer(f: &Fixtures, dt: DType) -> R<LoraLinear> {
    let t = |w: &str| field(f, "linear", w).to_dtype(dt);
    Ok(LoraLinear::new(
        t("weight")?,
        Some(t("bias")?),
        t("lora_A")?,
        t("lora_B")?,
        cfg(),
    )?)
}

fn conv_layer(f: &Fixtures, dt: DType) -> R<LoraConv2d> {
    let t = |w: &str| field(f, "conv", w).to_dtype(dt);
    let (w, b, a, bb) = (t("weight")?, t("bias")?, t("lora_A")?, t("lora_B")?);
    Ok(LoraConv2d::new(w, Some(b), a, bb, conv_cfg(), cfg())?)
}

/// Runs `layer` on the fixture's `x` and checks y, gx, gA and gB against peft.
fn check_case(
    f: &Fixtures,
    case: &str,
    dt: DType,
    tol: f64,
    forward: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    vars: &[Var],
) -> R<()> {
    let x = Var::from_tensor(&field(f, case, "x").to_dtype(dt)?)?;
    let gy = field(f, case, "gy").to_dtype(dt)?;
    let y = forward(x.as_tensor())?;
    let grads = (&y * &gy)?.sum_all()?.backward()?;
    assert_close(&format!("{case} {dt:?} y"), &y, field(f, case, "y"), tol);
    let gx = grads.get(&x).expect("gradient wrt x");
    assert_close(&format!("{case} {dt:?} gx"), gx, field(f, case, "gx"), tol);
    for (v, name) in vars.iter().zip(["gA", "gB"]) {
        let g = grads.get(v).expect("gradient wrt the adapter");
        assert_close(
            &format!("{case} {dt:?} {name}"),
            g,
            field(f, case, name),
            tol,
        );
    }
    Ok(())
}

#[test]
fn linear_forward_and_gradients_match_peft() -> R<()> {
    let f = fixtures("lora");
    for (dt, tol) in [(DType::F64, 1e-6), (DType::F32, 1e-5)] {
        let l = linear_layer(&f, dt)?;
        check_case(
            &f,
            "linear",
            dt,
            tol,
            &|x| l.forward_t(x, true),
            &l.trainable_vars(),
        )?;
    }
    Ok(())
}

#[test]
fn conv_forward_and_gradients_match_peft() -> R<()> {
    let f = fixtures("lora");
    for (dt, tol) in [(DType::F64, 1e-6), (DType::F32, 1e-5)] {
        let l = conv_layer(&f, dt)?;
        check_case(
            &f,
            "conv",
            dt,
            tol,
            &|x| l.forward_t(x, true),
            &l.trainable_vars(),
        )?;
    }
    Ok(())
}

#[test]
fn base_gets_no_gradient() -> R<()> {
    let f = fixtures("lora");
    let w = Var::from_tensor(field(&f, "linear", "weight"))?;
    let t = |n: &str| field(&f, "linear", n).clone();
    let l = LoraLinear::new(w.as_tensor().clone(), None, t("lora_A"), t("lora_B"), cfg())?;
    let grads = l.forward_t(&t("x"), true)?.sum_all()?.backward()?;
    assert!(
        grads.get(&w).is_none(),
        "the frozen base must get no gradient"
    );
    Ok(())
}

#[test]
fn merge_matches_peft_and_unmerge_restores() -> R<()> {
    let f = fixtures("lora");
    let mut l = linear_layer(&f, DType::F64)?;
    let mut c = conv_layer(&f, DType::F64)?;
    let x = field(&f, "linear", "x");
    let xc = field(&f, "conv", "x");
    let (y, yc) = (l.forward_t(x, false)?, c.forward_t(xc, false)?);
    l.merge()?;
    c.merge()?;
    assert!(l.is_merged() && c.is_merged());
    assert_close(
        "linear merged W",
        l.weight(),
        field(&f, "linear", "merged_weight"),
        1e-12,
    );
    assert_close(
        "conv merged W",
        c.weight(),
        field(&f, "conv", "merged_weight"),
        1e-12,
    );
    // A merged layer computes the same function.
    assert_close("linear merged y", &l.forward_t(x, false)?, &y, 1e-12);
    assert_close("conv merged y", &c.forward_t(xc, false)?, &yc, 1e-12);
    l.merge()?; // a no-op, as peft
    l.unmerge()?;
    c.unmerge()?;
    assert_close(
        "linear unmerged W",
        l.weight(),
        field(&f, "linear", "weight"),
        1e-12,
    );
    assert_close(
        "conv unmerged W",
        c.weight(),
        field(&f, "conv", "weight"),
        1e-12,
    );
    assert_close("linear unmerged y", &l.forward_t(x, false)?, &y, 1e-12);
    Ok(())
}

#[test]
fn merge_unmerge_f32_within_1e6() -> R<()> {
    let f = fixtures("lora");
    let mut l = linear_layer(&f, DType::F32)?;
    let w = l.weight().clone();
    let x = field(&f, "linear", "x").to_dtype(DType::F32)?;
    let y = l.forward_t(&x, false)?;
    l.merge()?;
    assert_close("f32 merged y", &l.forward_t(&x, false)?, &y, 1e-6);
    l.unmerge()?;
    assert_close("f32 unmerged W", l.weight(), &w, 1e-6);
    Ok(())
}

#[test]
fn loads_peft_adapter_file() -> R<()> {
    let f = fixtures("lora");
    let path = format!(
        "{}/tests/fixtures/lora_adapter.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    // SAFETY: the fixture file is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F64, &Device::Cpu)? };
    let vb = vb.pp("base_model.model");
    let t = |c: &str, n: &str| field(&f, c, n).clone();
    let l = lora_linear(
        t("linear", "weight"),
        Some(t("linear", "bias")),
        cfg(),
        vb.pp("fc"),
    )?;
    let y = l.forward_t(&t("linear", "x"), false)?;
    assert_close("adapter linear y", &y, &t("linear", "y"), 1e-12);
    let (w, b) = (t("conv", "weight"), Some(t("conv", "bias")));
    let c = lora_conv2d(w, b, conv_cfg(), cfg(), vb.pp("conv"))?;
    let y = c.forward_t(&t("conv", "x"), false)?;
    assert_close("adapter conv y", &y, &t("conv", "y"), 1e-12);
    let names: Vec<String> = l.named_tensors().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "base_layer.weight",
            "base_layer.bias",
            "lora_A.default.weight",
            "lora_B.default.weight"
        ]
    );
    Ok(())
}

#[test]
fn init_as_peft() -> R<()> {
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 1., (32, 64), &dev)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let l = lora_linear(w.clone(), None, LoraConfig::default().with_r(16), vb)?;
    assert_eq!(varmap.all_vars().len(), 2, "only A and B are created");
    // A: Kaiming-uniform with a = √5, i.e. uniform in ±1/√64; B: zeros.
    let a = l.lora_a().flatten_all()?.to_vec1::<f32>()?;
    assert!(a.iter().all(|v| v.abs() <= 0.125));
    let max = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(max > 0.11, "A should fill its range, max |A| = {max}");
    assert_eq!(l.lora_b().abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
    // Conv: fan_in = Cin · kh · kw.
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let wc = Tensor::randn(0f32, 1., (8, 4, 3, 3), &dev)?;
    let c = lora_conv2d(
        wc,
        None,
        Conv2dConfig::default(),
        LoraConfig::default(),
        vb.pp("c"),
    )?;
    assert_eq!(c.lora_a().dims(), &[8, 4, 3, 3]);
    assert_eq!(c.lora_b().dims(), &[8, 8, 1, 1]);
    let bound = 1.0 / 6.0 + 1e-6;
    assert!(c.lora_a().abs()?.max_all()?.to_scalar::<f32>()? <= bound);
    Ok(())
}

/// Must-hold 1: fine-tuning through `trainable_vars` leaves every base weight bit-identical.
#[test]
fn fine_tuning_leaves_base_bit_identical() -> R<()> {
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 1., (12, 16), &dev)?;
    let b = Tensor::randn(0f32, 1., 12, &dev)?;
    let wc = Tensor::randn(0f32, 1., (6, 3, 3, 3), &dev)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let lcfg = cfg().with_lora_dropout(0.1);
    let l = lora_linear(w.clone(), Some(b.clone()), lcfg, vb.pp("fc"))?;
    let c = lora_conv2d(
        wc.clone(),
        None,
        Conv2dConfig::default(),
        lcfg,
        vb.pp("conv"),
    )?;
    let mut vars = l.trainable_vars();
    vars.extend(c.trainable_vars());
    let before: Vec<Tensor> = vars
        .iter()
        .map(|v| v.as_tensor().copy())
        .collect::<Result<_, _>>()?;
    let params = candle_nn::ParamsAdamW {
        lr: 1e-2,
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut opt = candle_nn::AdamW::new(vars.clone(), params)?;
    let x = Tensor::randn(0f32, 1., (8, 16), &dev)?;
    let xc = Tensor::randn(0f32, 1., (2, 3, 7, 7), &dev)?;
    for _ in 0..3 {
        let loss = (l.forward_t(&x, true)?.sqr()?.mean_all()?
            + c.forward_t(&xc, true)?.sqr()?.mean_all()?)?;
        opt.backward_step(&loss)?;
    }
    let bits = |t: &Tensor| -> R<Vec<u32>> {
        Ok(t.flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .map(|v| v.to_bits())
            .collect())
    };
    assert_eq!(bits(l.weight())?, bits(&w)?);
    assert_eq!(bits(l.bias().expect("bias"))?, bits(&b)?);
    assert_eq!(bits(c.weight())?, bits(&wc)?);
    for (v, t) in vars.iter().zip(&before) {
        assert_ne!(
            bits(v.as_tensor())?,
            bits(t)?,
            "every adapter tensor trains"
        );
    }
    Ok(())
}

#[test]
fn dropout_only_in_training() -> R<()> {
    let f = fixtures("lora");
    let t = |n: &str| field(&f, "linear", n).clone();
    let lcfg = cfg().with_lora_dropout(0.5);
    let l = LoraLinear::new(t("weight"), Some(t("bias")), t("lora_A"), t("lora_B"), lcfg)?;
    let x = t("x");
    assert_close("eval", &l.forward_t(&x, false)?, &t("y"), 1e-12);
    let d = (l.forward_t(&x, true)? - t("y"))?
        .abs()?
        .max_all()?
        .to_scalar::<f64>()?;
    assert!(d > 1e-3, "dropout must change the training output");
    Ok(())
}

#[test]
fn bottleneck_adapter_is_residual_mlp() -> R<()> {
    let dev = Device::Cpu;
    let dw = Tensor::randn(0f64, 1., (3, 8), &dev)?;
    let db = Tensor::randn(0f64, 1., 3, &dev)?;
    let uw = Tensor::randn(0f64, 1., (8, 3), &dev)?;
    let ub = Tensor::randn(0f64, 1., 8, &dev)?;
    let act = candle_nn::Activation::Relu;
    let acfg = BottleneckAdapterConfig::default().with_activation(act);
    let a = BottleneckAdapter::new((dw.clone(), db.clone()), (uw.clone(), ub.clone()), acfg)?;
    let x = Tensor::randn(0f64, 1., (2, 5, 8), &dev)?;
    let h = x.broadcast_matmul(&dw.t()?)?.broadcast_add(&db)?.relu()?;
    let want = (&x + h.broadcast_matmul(&uw.t()?)?.broadcast_add(&ub)?)?;
    assert_close(
        "adapter",
        &candle_core::Module::forward(&a, &x)?,
        &want,
        1e-12,
    );
    // init_std = 0: exactly the identity.
    let vb = VarBuilder::zeros(DType::F32, &dev);
    let zero = BottleneckAdapterConfig::default().with_init_std(0.0);
    let a = candle_tricks::transfer::bottleneck_adapter(8, 2, zero, vb)?;
    let x = x.to_dtype(DType::F32)?;
    assert_close("identity", &candle_core::Module::forward(&a, &x)?, &x, 0.0);
    Ok(())
}

#[test]
fn bad_shapes_are_errors() -> R<()> {
    let dev = Device::Cpu;
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &dev);
    let c = cfg();
    assert!(LoraLinear::new(z(&[12, 16])?, None, z(&[3, 16])?, z(&[12, 4])?, c).is_err());
    assert!(LoraLinear::new(z(&[12, 16])?, None, z(&[4, 16])?, z(&[16, 4])?, c).is_err());
    assert!(LoraLinear::new(
        z(&[12, 16])?,
        Some(z(&[16])?),
        z(&[4, 16])?,
        z(&[12, 4])?,
        c
    )
    .is_err());
    let l = LoraLinear::new(z(&[12, 16])?, None, z(&[4, 16])?, z(&[12, 4])?, c)?;
    assert!(l.forward_t(&z(&[2, 15])?, false).is_err());
    let grouped = Conv2dConfig {
        groups: 2,
        ..Default::default()
    };
    let (w, a, b) = (z(&[6, 2, 3, 3])?, z(&[4, 2, 3, 3])?, z(&[6, 4, 1, 1])?);
    assert!(LoraConv2d::new(w, None, a, b, grouped, c).is_err());
    Ok(())
}
