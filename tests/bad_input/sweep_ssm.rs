//! Bad input for the `ssm` blocks.

use super::*;

pub(super) fn ssm_cases() -> Vec<Case> {
    let mut c = Cases::new("ssm");
    let mb = "MambaBlock";
    let m = || MambaConfig::new(8);
    for (name, cfg) in [
        ("d_model 0", MambaConfig::new(0)),
        ("d_state 0", MambaConfig { d_state: 0, ..m() }),
        ("d_conv 0", MambaConfig { d_conv: 0, ..m() }),
        ("expand 0", MambaConfig { expand: 0, ..m() }),
        (
            "dt_rank 0",
            MambaConfig {
                dt_rank: Some(0),
                ..m()
            },
        ),
        (
            "dt_min > dt_max",
            MambaConfig {
                dt_min: 0.1,
                dt_max: 0.01,
                ..m()
            },
        ),
        (
            "dt_min NaN",
            MambaConfig {
                dt_min: f64::NAN,
                ..m()
            },
        ),
        (
            "dt_max Inf",
            MambaConfig {
                dt_max: f64::INFINITY,
                ..m()
            },
        ),
        (
            "dt_init_floor -1",
            MambaConfig {
                dt_init_floor: -1.0,
                ..m()
            },
        ),
    ] {
        c.err(&format!("mamba_block: {name}"), mb, move || {
            mamba_block(cfg, vb())?;
            Ok(())
        });
    }
    c.err("MambaBlock forward: wrong d_model", mb, move || {
        mamba_block(m(), vb())?.forward(&t((1, 4, 6)))?;
        Ok(())
    });
    c.err("MambaBlock forward: rank 2", mb, move || {
        mamba_block(m(), vb())?.forward(&t((4, 8)))?;
        Ok(())
    });
    c.err("MambaBlock forward: u32", mb, move || {
        mamba_block(m(), vb())?.forward(&td((1, 4, 8), DType::U32))?;
        Ok(())
    });
    c.err("MambaBlock step: state of another batch", mb, move || {
        let b = mamba_block(m(), vb())?;
        let mut s = b.zero_state(2)?;
        b.step(&t((1, 8)), &mut s)?;
        Ok(())
    });
    c.err(
        "MambaBlock step: conv state of the wrong shape",
        mb,
        move || {
            let b = mamba_block(m(), vb())?;
            let s0 = b.zero_state(1)?;
            let mut s = MambaState {
                conv: t((1, 16, 7)),
                ssm: s0.ssm,
            };
            b.step(&t((1, 8)), &mut s)?;
            Ok(())
        },
    );
    c.err("MambaBlock step: ssm state of dtype f16", mb, move || {
        let b = mamba_block(m(), vb())?;
        let s0 = b.zero_state(1)?;
        let mut s = MambaState {
            conv: s0.conv,
            ssm: s0.ssm.to_dtype(DType::F16)?,
        };
        b.step(&t((1, 8)), &mut s)?;
        Ok(())
    });
    c.err("MambaBlock step: input of the wrong width", mb, move || {
        let b = mamba_block(m(), vb())?;
        let mut s = b.zero_state(1)?;
        b.step(&t((1, 6)), &mut s)?;
        Ok(())
    });
    c.val(
        "MambaBlock: non-contiguous forward == contiguous, == step by step",
        move || {
            let b = mamba_block(m(), vb())?;
            let x = t((1, 8, 5)).transpose(1, 2)?; // (1, 5, 8)
            let y = b.forward(&x)?;
            close("y", &y, &b.forward(&x.contiguous()?)?, 0.0)?;
            let mut s = b.zero_state(1)?;
            let steps = (0..5)
                .map(|i| b.step(&x.i((.., i, ..))?, &mut s))
                .collect::<candle_tricks::Result<Vec<_>>>()?;
            close("steps", &Tensor::stack(&steps, 1)?, &y, 1e-4)
        },
    );
    let mm = "MambaModel";
    let mmc = move || MambaModelConfig::new(16, 1, m());
    for (name, cfg) in [
        ("vocab 0", MambaModelConfig::new(0, 1, MambaConfig::new(8))),
        (
            "n_layer 0",
            MambaModelConfig::new(16, 0, MambaConfig::new(8)),
        ),
        (
            "norm_eps NaN",
            MambaModelConfig {
                norm_eps: f64::NAN,
                ..MambaModelConfig::new(16, 1, MambaConfig::new(8))
            },
        ),
    ] {
        c.err(&format!("mamba_model: {name}"), mm, move || {
            mamba_model(cfg, vb())?;
            Ok(())
        });
    }
    c.err(
        "MambaModel forward: token id out of the vocabulary",
        mm,
        move || {
            let model = mamba_model(mmc(), vb())?;
            model.forward(&Tensor::new(&[[1u32, 16]], &cpu())?)?;
            Ok(())
        },
    );
    c.err("MambaModel forward: f32 ids", mm, move || {
        mamba_model(mmc(), vb())?.forward(&t((1, 3)))?;
        Ok(())
    });
    c.err("MambaModel forward: rank-3 ids", mm, move || {
        let model = mamba_model(mmc(), vb())?;
        model.forward(&Tensor::zeros((1, 2, 3), DType::U32, &cpu())?)?;
        Ok(())
    });
    c.err("MambaModel step: state of another batch", mb, move || {
        let model = mamba_model(mmc(), vb())?;
        let mut s = model.zero_state(3)?;
        model.step(&Tensor::new(&[1u32], &cpu())?, &mut s)?;
        Ok(())
    });
    c.err("MambaModel generate: empty prompt", mm, move || {
        let model = mamba_model(mmc(), vb())?;
        let p = Tensor::zeros((1, 0), DType::U32, &cpu())?;
        model.generate(&p, 2, candle_tricks::ssm::Sampling::Greedy)?;
        Ok(())
    });
    c.list
}
