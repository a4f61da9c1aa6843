//! Bad input for the `blocks` family.

use super::*;

/// A module that keeps only the first channel (changes the shape).
fn first_channel(x: &Tensor) -> candle_core::Result<Tensor> {
    x.narrow(1, 0, 1)
}

pub(super) fn blocks_cases() -> Vec<Case> {
    let mut c = Cases::new("blocks");
    let dp = "DropPath";
    for (name, p) in [
        ("NaN", f32::NAN),
        ("-0.1", -0.1),
        ("1.5", 1.5),
        ("1.0", 1.0),
        ("Inf", f32::INFINITY),
    ] {
        c.err(&format!("DropPath::new({name})"), dp, move || {
            DropPath::new(p)?;
            Ok(())
        });
    }
    c.err("DropPath::from_config: p NaN", dp, || {
        DropPath::from_config(DropPathConfig {
            p: f32::NAN,
            scale_by_keep: false,
        })?;
        Ok(())
    });
    c.err("DropPath apply: scalar input", dp, || {
        DropPath::new(0.5)?.apply(&Tensor::new(1f32, &cpu())?, true)?;
        Ok(())
    });
    c.err("DropPath apply: u32 input", dp, || {
        DropPath::new(0.5)?.apply(&td((2, 3), DType::U32), true)?;
        Ok(())
    });
    c.val(
        "DropPath apply: non-contiguous, eval is the identity",
        || {
            let x = noncontig((2, 3, 4));
            close("y", &DropPath::new(0.5)?.apply(&x, false)?, &x, 0.0)
        },
    );
    c.val(
        "DropPath apply (train): each sample all-zero or scaled by 1/keep",
        || {
            let x = (noncontig((64, 3, 4)).abs()? + 1.0)?; // no zeros
            let y = DropPath::new(0.5)?.apply(&x, true)?;
            let r = (y / x)?.flatten_from(1)?; // 0 or 2 per sample, the same in a row
            let (lo, hi) = (r.min_keepdim(1)?, r.max_keepdim(1)?);
            close("row const", &lo, &hi, 1e-6)?;
            for v in lo.flatten_all()?.to_vec1::<f32>()? {
                ensure(v == 0.0 || (v - 2.0).abs() < 1e-6, format!("ratio {v}"))?;
            }
            Ok(())
        },
    );
    let d2 = "Dropout2d";
    for (name, p) in [("NaN", f32::NAN), ("2.0", 2.0), ("-1", -1.0)] {
        c.err(&format!("Dropout2d::new({name})"), d2, move || {
            Dropout2d::new(p)?;
            Ok(())
        });
    }
    c.err("Dropout2d apply: rank 2 (no spatial dims)", d2, || {
        Dropout2d::new(0.5)?.apply(&t((2, 3)), true)?;
        Ok(())
    });
    c.err("Dropout2d apply: i64", d2, || {
        Dropout2d::new(0.5)?.apply(&td((2, 3, 4, 4), DType::I64), true)?;
        Ok(())
    });
    c.val("Dropout2d apply (train): whole channels dropped", || {
        let x = (t((4, 16, 3, 3)).abs()? + 1.0)?.transpose(2, 3)?;
        let y = Dropout2d::new(0.5)?.apply(&x, true)?;
        let r = (y / x)?.flatten_from(2)?;
        close(
            "channel const",
            &r.min_keepdim(2)?,
            &r.max_keepdim(2)?,
            1e-6,
        )
    });

    c.err("Residual: branch changes the shape", "Residual", || {
        Residual::new(first_channel).forward(&t((2, 3, 4)))?;
        Ok(())
    });
    c.err("PreNorm: branch changes the shape", "PreNorm", || {
        let n = layer_norm_layer(4, LayerNormConfig::default(), vb())?;
        PreNorm::new(n, first_channel).forward(&t((2, 3, 4)))?;
        Ok(())
    });
    c.val("Residual: non-contiguous input == x + f(x)", || {
        let x = noncontig((2, 3, 4));
        let y = Residual::new(|x: &Tensor| x.sqr()).forward(&x)?;
        close("y", &y, &(&x + x.sqr()?)?, 1e-6)
    });
    let ls = "LayerScale";
    c.err("LayerScale::new: gamma rank 2", ls, || {
        LayerScale::new(t((2, 2)), LayerScaleConfig::default())?;
        Ok(())
    });
    c.err("layer_scale: init NaN", ls, || {
        let cfg = LayerScaleConfig {
            init_value: f64::NAN,
            ..Default::default()
        };
        layer_scale(4, cfg, vb())?;
        Ok(())
    });
    c.err("layer_scale: dim 0", ls, || {
        layer_scale(0, LayerScaleConfig::default(), vb())?;
        Ok(())
    });
    c.err("LayerScale forward: wrong last dim", ls, || {
        layer_scale(4, LayerScaleConfig::default(), vb())?.forward(&t((2, 5)))?;
        Ok(())
    });
    c.err(
        "LayerScale forward (channels first): wrong channels",
        ls,
        || {
            let cfg = LayerScaleConfig {
                channels_first: true,
                ..Default::default()
            };
            layer_scale(4, cfg, vb())?.forward(&t((2, 5, 3, 3)))?;
            Ok(())
        },
    );

    let bb = "BasicBlock";
    let rc = ResBlockConfig::default;
    c.err("basic_block: 0 in-channels", bb, move || {
        basic_block(0, 4, rc(), vb())?;
        Ok(())
    });
    c.err("basic_block: stride 0", bb, move || {
        basic_block(4, 4, ResBlockConfig { stride: 0, ..rc() }, vb())?;
        Ok(())
    });
    c.err("basic_block: groups 2", bb, move || {
        basic_block(4, 4, ResBlockConfig { groups: 2, ..rc() }, vb())?;
        Ok(())
    });
    c.err("basic_block: unknown norm", bb, move || {
        let cfg = ResBlockConfig {
            norm: "bogus".into(),
            ..rc()
        };
        basic_block(4, 4, cfg, vb())?;
        Ok(())
    });
    c.err("basic_block: drop_path 1.5", bb, move || {
        basic_block(
            4,
            4,
            ResBlockConfig {
                drop_path: 1.5,
                ..rc()
            },
            vb(),
        )?;
        Ok(())
    });
    c.err("BasicBlock forward: wrong channels", bb, move || {
        basic_block(4, 4, rc(), vb())?.forward_t(&t((1, 3, 5, 5)), false)?;
        Ok(())
    });
    c.val(
        "BasicBlock forward: non-contiguous == contiguous",
        move || {
            let b = basic_block(3, 4, ResBlockConfig { stride: 2, ..rc() }, vb())?;
            let x = noncontig((2, 3, 5, 6));
            close(
                "y",
                &b.forward_t(&x, false)?,
                &b.forward_t(&x.contiguous()?, false)?,
                1e-5,
            )
        },
    );
    let bt = "Bottleneck";
    c.err("bottleneck: planes 0", bt, move || {
        bottleneck(4, 0, rc(), vb())?;
        Ok(())
    });
    c.err("bottleneck: groups 0", bt, move || {
        bottleneck(4, 4, ResBlockConfig { groups: 0, ..rc() }, vb())?;
        Ok(())
    });
    c.err("bottleneck: dilation 0", bt, move || {
        bottleneck(
            4,
            4,
            ResBlockConfig {
                dilation: 0,
                ..rc()
            },
            vb(),
        )?;
        Ok(())
    });
    c.err("Bottleneck forward: wrong channels", bt, move || {
        bottleneck(16, 4, rc(), vb())?.forward_t(&t((1, 8, 4, 4)), false)?;
        Ok(())
    });
    let db = "DownBlock";
    c.err("down_block: 0 out-channels", db, || {
        down_block(4, 0, DownBlockConfig::default(), vb())?;
        Ok(())
    });
    c.err("down_block: group norm not dividing", db, || {
        let cfg = DownBlockConfig {
            norm: "group:3".into(),
            ..Default::default()
        };
        down_block(4, 8, cfg, vb())?;
        Ok(())
    });
    c.err("DownBlock forward: wrong channels", db, || {
        let d = down_block(4, 8, DownBlockConfig::default(), vb())?;
        d.forward_t(&t((1, 3, 8, 8)), false)?;
        Ok(())
    });
    c.err("DownBlock forward: 1x1 input with downsampling", db, || {
        let cfg = DownBlockConfig {
            downsample: true,
            ..Default::default()
        };
        let d = down_block(4, 8, cfg, vb())?;
        d.forward_t(&t((1, 4, 1, 1)), false)?;
        Ok(())
    });
    let ub = "UpBlock";
    c.err("up_block: 0 skip-channels", ub, || {
        up_block(8, 0, 8, UpBlockConfig::default(), vb())?;
        Ok(())
    });
    c.err("UpBlock forward: skip of the wrong channels", ub, || {
        let u = up_block(8, 8, 8, UpBlockConfig::default(), vb())?;
        u.forward_t(&t((1, 8, 4, 4)), &t((1, 4, 8, 8)), false)?;
        Ok(())
    });
    c.err("UpBlock forward: skip of a different batch", ub, || {
        let u = up_block(8, 8, 8, UpBlockConfig::default(), vb())?;
        u.forward_t(&t((1, 8, 4, 4)), &t((2, 8, 8, 8)), false)?;
        Ok(())
    });
    c.err("UpBlock forward: x of the wrong channels", ub, || {
        let u = up_block(8, 8, 8, UpBlockConfig::default(), vb())?;
        u.forward_t(&t((1, 4, 4, 4)), &t((1, 8, 8, 8)), false)?;
        Ok(())
    });

    let ms = "multiscale";
    let stack = || ConvStackConfig {
        spatial_dims: 2,
        widths: vec![4],
        kernel_size: 3,
        norm: "none".into(),
    };
    c.err("multi_scale_pathways: factor 0", ms, move || {
        let cfg = MultiScaleConfig {
            factor: 0,
            ..Default::default()
        };
        multi_scale_pathways(2, &stack(), cfg, vb())?;
        Ok(())
    });
    c.err("conv_stack: no widths", "ConvStack", move || {
        let cfg = ConvStackConfig {
            widths: vec![],
            ..stack()
        };
        conv_stack(2, &cfg, vb())?;
        Ok(())
    });
    c.err("conv_stack: 4 spatial dims", "ConvStack", move || {
        let cfg = ConvStackConfig {
            spatial_dims: 4,
            ..stack()
        };
        conv_stack(2, &cfg, vb())?;
        Ok(())
    });
    c.err("conv_stack: even kernel", "ConvStack", move || {
        let cfg = ConvStackConfig {
            kernel_size: 2,
            ..stack()
        };
        conv_stack(2, &cfg, vb())?;
        Ok(())
    });
    c.err(
        "MultiScalePathways forward: input smaller than the factor",
        ms,
        move || {
            let m = multi_scale_pathways(2, &stack(), MultiScaleConfig::default(), vb())?;
            m.forward_t(&t((1, 2, 2, 2)), false)?;
            Ok(())
        },
    );
    // The error names the inner stage that received the input.
    c.err(
        "MultiScalePathways forward: wrong channels",
        "ConvStack",
        move || {
            let m = multi_scale_pathways(2, &stack(), MultiScaleConfig::default(), vb())?;
            m.forward_t(&t((1, 3, 6, 6)), false)?;
            Ok(())
        },
    );
    c.err(
        "MultiScalePathways::new: sum of different widths",
        ms,
        move || {
            let full = conv_stack(2, &stack(), vb())?;
            let low = conv_stack(
                2,
                &ConvStackConfig {
                    widths: vec![3],
                    ..stack()
                },
                vb(),
            )?;
            let cfg = MultiScaleConfig {
                fusion: candle_tricks::blocks::multiscale::PathwayFusion::Sum,
                ..Default::default()
            };
            let m = MultiScalePathways::new(full, low, cfg)?;
            m.forward_t(&t((1, 2, 6, 6)), false)?;
            Ok(())
        },
    );
    let dn = "downsample_avg";
    c.err("downsample_avg: factor 0", dn, || {
        downsample_avg(&t((1, 2, 4, 4)), 0)?;
        Ok(())
    });
    c.err("downsample_avg: rank 2", dn, || {
        downsample_avg(&t((4, 4)), 2)?;
        Ok(())
    });
    c.val("downsample_avg: rank 3 (1-D) == hand value", || {
        let x = Tensor::new(&[[[1f32, 3., 5., 7., 9.]]], &cpu())?;
        let y = downsample_avg(&x, 2)?;
        close("y", &y, &Tensor::new(&[[[2f32, 6., 9.]]], &cpu())?, 1e-6)
    });
    c.err("downsample_avg: u32", dn, || {
        downsample_avg(&td((1, 2, 4, 4), DType::U32), 2)?;
        Ok(())
    });
    c.either(
        "downsample_avg: size not divisible by the factor",
        dn,
        || {
            let x = t((1, 1, 5, 4));
            let y = downsample_avg(&x, 2)?;
            // Ceil mode: the last row averages what it has (as `avg_pool(ceil_mode=True)`).
            let (h, w) = (y.dim(2)?, y.dim(3)?);
            ensure(
                (h, w) == (3, 2) || (h, w) == (2, 2),
                format!("shape {:?}", y.dims()),
            )
        },
    );
    c.val("downsample_avg: non-contiguous == contiguous", || {
        let x = noncontig((1, 2, 6, 4));
        close(
            "y",
            &downsample_avg(&x, 2)?,
            &downsample_avg(&x.contiguous()?, 2)?,
            0.0,
        )
    });
    c.err("upsample_nearest: factor 0", "upsample_nearest", || {
        upsample_nearest(&t((1, 2, 4, 4)), 0)?;
        Ok(())
    });

    let ee = "EarlyExit";
    let lin = |i: usize, o: usize| candle_nn::linear(i, o, vb()).unwrap();
    c.err("EarlyExit::new: heads != stages", ee, move || {
        EarlyExit::new(
            vec![lin(4, 4)],
            vec![lin(4, 3), lin(4, 3)],
            EarlyExitConfig::default(),
        )?;
        Ok(())
    });
    c.err("EarlyExit::new: no stages", ee, move || {
        EarlyExit::<candle_nn::Linear, candle_nn::Linear>::new(
            vec![],
            vec![],
            EarlyExitConfig::default(),
        )?;
        Ok(())
    });
    c.err("EarlyExit::new: threshold NaN", ee, move || {
        let cfg = EarlyExitConfig {
            threshold: f64::NAN,
            ..Default::default()
        };
        EarlyExit::new(vec![lin(4, 4)], vec![lin(4, 3)], cfg)?;
        Ok(())
    });
    c.err(
        "EarlyExit forward: heads of different class counts",
        ee,
        move || {
            let e = EarlyExit::new(
                vec![lin(4, 4), lin(4, 4)],
                vec![lin(4, 3), lin(4, 5)],
                EarlyExitConfig::default(),
            )?;
            e.forward_all(&t((2, 4)), false)?;
            Ok(())
        },
    );
    c.err(
        "early_exit_loss: weights of the wrong length",
        "early_exit_loss",
        || {
            let targets = Tensor::new(&[0u32, 1], &cpu())?;
            early_exit_loss(&[t((2, 3)), t((2, 3))], &targets, &[1.0])?;
            Ok(())
        },
    );
    c.err("early_exit_loss: no exits", "early_exit_loss", || {
        let targets = Tensor::new(&[0u32, 1], &cpu())?;
        early_exit_loss(&[], &targets, &[])?;
        Ok(())
    });
    c.err("early_exit_loss: NaN weight", "early_exit_loss", || {
        let targets = Tensor::new(&[0u32, 1], &cpu())?;
        early_exit_loss(&[t((2, 3))], &targets, &[f64::NAN])?;
        Ok(())
    });
    c.err(
        "early_exit_loss: target out of range",
        "early_exit_loss",
        || {
            let targets = Tensor::new(&[0u32, 7], &cpu())?;
            early_exit_loss(&[t((2, 3))], &targets, &[1.0])?;
            Ok(())
        },
    );
    c.err("exit_confidence: rank-3 logits", "EarlyExit", || {
        exit_confidence(&t((2, 3, 4)), ExitCriterion::MaxProb)?;
        Ok(())
    });
    c.list
}
