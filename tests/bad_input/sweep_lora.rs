//! Bad input for the LoRA and bottleneck adapters of `transfer`.

use super::*;
use candle_tricks::ops::Conv2dConfig;
use candle_tricks::transfer::{
    bottleneck_adapter, lora_conv2d, lora_linear, BottleneckAdapter, BottleneckAdapterConfig,
    LoraConfig, LoraConv2d, LoraLinear,
};

fn z(dims: &[usize]) -> Tensor {
    Tensor::zeros(dims, DType::F32, &cpu()).unwrap()
}

pub(super) fn lora_cases() -> Vec<Case> {
    let mut c = Cases::new("lora");
    let (l, cv, ad) = ("LoraLinear", "LoraConv2d", "BottleneckAdapter");
    let d = LoraConfig::default;
    for (name, cfg) in [
        ("r 0", d().with_r(0)),
        ("alpha 0", d().with_lora_alpha(0.0)),
        ("alpha -1", d().with_lora_alpha(-1.0)),
        ("alpha NaN", d().with_lora_alpha(f64::NAN)),
        ("alpha Inf", d().with_lora_alpha(f64::INFINITY)),
        ("dropout 1", d().with_lora_dropout(1.0)),
        ("dropout -0.1", d().with_lora_dropout(-0.1)),
        ("dropout NaN", d().with_lora_dropout(f64::NAN)),
    ] {
        c.err(&format!("lora_linear: {name}"), l, move || {
            lora_linear(z(&[6, 4]), None, cfg, vb())?;
            Ok(())
        });
        c.err(&format!("lora_conv2d: {name}"), cv, move || {
            lora_conv2d(z(&[6, 4, 3, 3]), None, Conv2dConfig::default(), cfg, vb())?;
            Ok(())
        });
    }
    c.err("lora_linear: weight rank 3", l, move || {
        lora_linear(z(&[6, 4, 1]), None, d(), vb())?;
        Ok(())
    });
    c.err("lora_linear: empty weight", l, move || {
        lora_linear(z(&[0, 4]), None, d(), vb())?;
        Ok(())
    });
    c.err("lora_linear: integer weight", l, move || {
        let w = Tensor::zeros((6, 4), DType::U32, &cpu())?;
        LoraLinear::new(
            w.clone(),
            None,
            w.narrow(0, 0, 2)?,
            w.narrow(1, 0, 2)?,
            d().with_r(2),
        )?;
        Ok(())
    });
    c.err("lora_linear: bias of the wrong length", l, move || {
        lora_linear(z(&[6, 4]), Some(z(&[4])), d(), vb())?;
        Ok(())
    });
    c.err("lora_linear: A of the wrong rank r", l, move || {
        LoraLinear::new(z(&[6, 4]), None, z(&[3, 4]), z(&[6, 2]), d().with_r(2))?;
        Ok(())
    });
    c.err("lora_linear: B (in, r) instead of (out, r)", l, move || {
        LoraLinear::new(z(&[6, 4]), None, z(&[2, 4]), z(&[4, 2]), d().with_r(2))?;
        Ok(())
    });
    c.err("lora_linear: f64 adapter on an f32 base", l, move || {
        let a = Tensor::zeros((2, 4), DType::F64, &cpu())?;
        LoraLinear::new(z(&[6, 4]), None, a, z(&[6, 2]), d().with_r(2))?;
        Ok(())
    });
    c.err(
        "lora_linear: adapter file with a wrong-shape lora_A",
        l,
        move || {
            let vb = vb_of(vec![
                ("lora_A.weight", z(&[8, 5])),
                ("lora_B.weight", z(&[6, 8])),
            ]);
            lora_linear(z(&[6, 4]), None, d(), vb)?;
            Ok(())
        },
    );
    c.err("lora_linear: adapter file missing lora_B", l, move || {
        let vb = vb_of(vec![("lora_A.weight", z(&[8, 4]))]);
        lora_linear(z(&[6, 4]), None, d(), vb)?;
        Ok(())
    });
    c.err("lora_linear: rank so large A cannot exist", l, move || {
        lora_linear(z(&[6, 4]), None, d().with_r(usize::MAX / 2), vb())?;
        Ok(())
    });
    c.err("lora_linear: input of the wrong width", l, move || {
        let layer = lora_linear(z(&[6, 4]), None, d(), vb())?;
        layer.forward_t(&z(&[2, 5]), true)?;
        Ok(())
    });
    c.err("lora_conv2d: groups 2", cv, move || {
        let conv = Conv2dConfig {
            groups: 2,
            ..Default::default()
        };
        lora_conv2d(z(&[6, 2, 3, 3]), None, conv, d(), vb())?;
        Ok(())
    });
    c.err("lora_conv2d: weight rank 3", cv, move || {
        lora_conv2d(z(&[6, 4, 3]), None, Conv2dConfig::default(), d(), vb())?;
        Ok(())
    });
    c.err("lora_conv2d: B not 1x1", cv, move || {
        let (a, b) = (z(&[2, 4, 3, 3]), z(&[6, 2, 3, 3]));
        LoraConv2d::new(
            z(&[6, 4, 3, 3]),
            None,
            a,
            b,
            Default::default(),
            d().with_r(2),
        )?;
        Ok(())
    });
    c.err("lora_conv2d: input channels wrong", cv, move || {
        let layer = lora_conv2d(z(&[6, 4, 3, 3]), None, Conv2dConfig::default(), d(), vb())?;
        layer.forward_t(&z(&[1, 3, 5, 5]), false)?;
        Ok(())
    });
    let bd = BottleneckAdapterConfig::default;
    for (name, cfg) in [
        ("init_std -1", bd().with_init_std(-1.0)),
        ("init_std NaN", bd().with_init_std(f64::NAN)),
    ] {
        c.err(&format!("bottleneck_adapter: {name}"), ad, move || {
            bottleneck_adapter(8, 2, cfg, vb())?;
            Ok(())
        });
    }
    c.err("bottleneck_adapter: bottleneck 0", ad, move || {
        bottleneck_adapter(8, 0, bd(), vb())?;
        Ok(())
    });
    c.err("bottleneck_adapter: dim 0", ad, move || {
        bottleneck_adapter(0, 2, bd(), vb())?;
        Ok(())
    });
    c.err("bottleneck_adapter: up weight transposed", ad, move || {
        BottleneckAdapter::new((z(&[2, 8]), z(&[2])), (z(&[2, 8]), z(&[8])), bd())?;
        Ok(())
    });
    c.err(
        "bottleneck_adapter: input of the wrong width",
        ad,
        move || {
            let a = bottleneck_adapter(8, 2, bd(), vb())?;
            a.forward(&z(&[3, 7]))?;
            Ok(())
        },
    );
    c.list
}
