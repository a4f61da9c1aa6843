//! Bad input for the convolution and pooling ops.

use super::*;

pub(super) fn conv_ops_cases() -> Vec<Case> {
    let mut c = Cases::new("ops");
    let d2 = DepthwiseConv2dConfig::default();
    let dw = "depthwise_conv2d";

    // depthwise_conv2d
    c.err("dw2d: rank-3 input", dw, move || {
        ops::depthwise_conv2d(&t((2, 5, 5)), &t((2, 1, 3, 3)), d2)?;
        Ok(())
    });
    c.err("dw2d: rank-3 weight", dw, move || {
        ops::depthwise_conv2d(&t((1, 2, 5, 5)), &t((2, 3, 3)), d2)?;
        Ok(())
    });
    c.either("dw2d: zero batch", dw, move || {
        let y = ops::depthwise_conv2d(&t((0, 2, 5, 5)), &t((2, 1, 3, 3)), d2)?;
        ensure(y.dims() == [0, 2, 3, 3], format!("shape {:?}", y.dims()))
    });
    c.err("dw2d: zero channels", dw, move || {
        ops::depthwise_conv2d(&t((1, 0, 5, 5)), &t((0, 1, 3, 3)), d2)?;
        Ok(())
    });
    c.err("dw2d: weight channels not a multiple", dw, move || {
        ops::depthwise_conv2d(&t((1, 3, 5, 5)), &t((4, 1, 3, 3)), d2)?;
        Ok(())
    });
    c.err("dw2d: weight in-channels 2", dw, move || {
        ops::depthwise_conv2d(&t((1, 3, 5, 5)), &t((3, 2, 3, 3)), d2)?;
        Ok(())
    });
    c.err("dw2d: u32 input", dw, move || {
        ops::depthwise_conv2d(
            &td((1, 2, 5, 5), DType::U32),
            &td((2, 1, 3, 3), DType::U32),
            d2,
        )?;
        Ok(())
    });
    c.err("dw2d: i64 weight", dw, move || {
        ops::depthwise_conv2d(&t((1, 2, 5, 5)), &td((2, 1, 3, 3), DType::I64), d2)?;
        Ok(())
    });
    c.err("dw2d: f64 (unsupported by the kernel)", dw, move || {
        ops::depthwise_conv2d(
            &td((1, 2, 5, 5), DType::F64),
            &td((2, 1, 3, 3), DType::F64),
            d2,
        )?;
        Ok(())
    });
    c.err("dw2d: f32 input, f16 weight", dw, move || {
        ops::depthwise_conv2d(&t((1, 2, 5, 5)), &td((2, 1, 3, 3), DType::F16), d2)?;
        Ok(())
    });
    c.err("dw2d: stride 0", dw, move || {
        ops::depthwise_conv2d(
            &t((1, 2, 5, 5)),
            &t((2, 1, 3, 3)),
            dw2(0, Padding::Valid, 1),
        )?;
        Ok(())
    });
    c.err("dw2d: dilation 0", dw, move || {
        ops::depthwise_conv2d(
            &t((1, 2, 5, 5)),
            &t((2, 1, 3, 3)),
            dw2(1, Padding::Valid, 0),
        )?;
        Ok(())
    });
    c.err(
        "dw2d: kernel larger than the input (valid)",
        dw,
        move || {
            ops::depthwise_conv2d(
                &t((1, 2, 3, 3)),
                &t((2, 1, 5, 5)),
                dw2(1, Padding::Valid, 1),
            )?;
            Ok(())
        },
    );
    c.err("dw2d: zero-sized kernel", dw, move || {
        ops::depthwise_conv2d(&t((1, 2, 3, 3)), &t((2, 1, 0, 3)), d2)?;
        Ok(())
    });
    c.val(
        "dw2d: stride larger than the input == reference",
        move || {
            let (x, w, cfg) = (
                t((1, 2, 3, 3)),
                t((4, 1, 2, 2)),
                dw2(7, Padding::Explicit(1), 1),
            );
            let y = ops::depthwise_conv2d(&x, &w, cfg)?;
            close(
                "y",
                &y,
                &ops::depthwise_conv2d_reference(&x, &w, cfg)?,
                1e-5,
            )
        },
    );
    c.val(
        "dw2d: kernel larger than the input (same) == reference",
        move || {
            let (x, w, cfg) = (t((1, 2, 2, 2)), t((2, 1, 5, 5)), dw2(1, Padding::Same, 2));
            let y = ops::depthwise_conv2d(&x, &w, cfg)?;
            close(
                "y",
                &y,
                &ops::depthwise_conv2d_reference(&x, &w, cfg)?,
                1e-5,
            )
        },
    );
    c.val("dw2d: non-contiguous input == contiguous", move || {
        let x = noncontig((2, 3, 5, 6));
        let w = t((3, 1, 3, 3));
        let cfg = dw2(2, Padding::Same, 1);
        let y = ops::depthwise_conv2d(&x, &w, cfg)?;
        close(
            "y",
            &y,
            &ops::depthwise_conv2d(&x.contiguous()?, &w, cfg)?,
            0.0,
        )?;
        close(
            "y",
            &y,
            &ops::depthwise_conv2d_reference(&x, &w, cfg)?,
            1e-5,
        )
    });
    c.val("dw2d: non-contiguous weight == contiguous", move || {
        let x = t((1, 3, 5, 5));
        let w = noncontig((3, 1, 3, 3));
        let y = ops::depthwise_conv2d(&x, &w, d2)?;
        close(
            "y",
            &y,
            &ops::depthwise_conv2d(&x, &w.contiguous()?, d2)?,
            0.0,
        )
    });
    c.val(
        "dw2d: 1x1 spatial input, same padding == hand value",
        move || {
            // Only the kernel's centre tap sees the pixel: y = x * w[1, 1].
            let x = Tensor::new(&[[[[2f32]]]], &cpu())?;
            let w = t((1, 1, 3, 3));
            let y = ops::depthwise_conv2d(&x, &w, dw2(1, Padding::Same, 1))?;
            let want = (w.i((.., .., 1..2, 1..2))? * 2.0)?;
            close("y", &y, &want, 1e-6)
        },
    );

    // depthwise_conv1d
    let dc1 = "depthwise_conv1d";
    let d1 = DepthwiseConv1dConfig::default();
    c.err("dw1d: rank-4 input", dc1, move || {
        ops::depthwise_conv1d(&t((1, 2, 5, 5)), &t((2, 1, 3)), d1)?;
        Ok(())
    });
    c.err("dw1d: channel mismatch", dc1, move || {
        ops::depthwise_conv1d(&t((1, 2, 5)), &t((3, 1, 3)), d1)?;
        Ok(())
    });
    c.err("dw1d: stride 0", dc1, move || {
        ops::depthwise_conv1d(&t((1, 2, 5)), &t((2, 1, 3)), dw1(0, Padding::Valid, 1))?;
        Ok(())
    });
    c.err("dw1d: u32", dc1, move || {
        ops::depthwise_conv1d(&td((1, 2, 5), DType::U32), &td((2, 1, 3), DType::U32), d1)?;
        Ok(())
    });
    c.err("dw1d: kernel longer than the input", dc1, move || {
        ops::depthwise_conv1d(&t((1, 2, 2)), &t((2, 1, 3)), dw1(1, Padding::Valid, 1))?;
        Ok(())
    });
    c.val("dw1d: non-contiguous input == reference", move || {
        let x = t((2, 5, 3)).transpose(1, 2)?; // (2, 3, 5)
        let w = t((3, 1, 2));
        let cfg = dw1(3, Padding::Explicit(1), 2);
        let y = ops::depthwise_conv1d(&x, &w, cfg)?;
        close(
            "y",
            &y,
            &ops::depthwise_conv1d_reference(&x, &w, cfg)?,
            1e-5,
        )
    });

    // conv3d
    let cv = "conv3d";
    let cc = Conv3dConfig::default();
    c.err("conv3d: rank-4 input", cv, move || {
        ops::conv3d(&t((2, 4, 4, 4)), &t((3, 2, 1, 1, 1)), cc)?;
        Ok(())
    });
    c.err("conv3d: channel mismatch", cv, move || {
        ops::conv3d(&t((1, 2, 4, 4, 4)), &t((3, 4, 1, 1, 1)), cc)?;
        Ok(())
    });
    c.err("conv3d: groups 0", cv, move || {
        ops::conv3d(&t((1, 2, 4, 4, 4)), &t((2, 2, 1, 1, 1)), cc.with_groups(0))?;
        Ok(())
    });
    c.err("conv3d: groups not dividing the channels", cv, move || {
        ops::conv3d(&t((1, 3, 4, 4, 4)), &t((2, 1, 1, 1, 1)), cc.with_groups(2))?;
        Ok(())
    });
    c.err("conv3d: stride 0", cv, move || {
        ops::conv3d(
            &t((1, 2, 4, 4, 4)),
            &t((2, 2, 1, 1, 1)),
            c3(0, Padding::Valid, 1),
        )?;
        Ok(())
    });
    c.err("conv3d: u32", cv, move || {
        ops::conv3d(
            &td((1, 2, 4, 4, 4), DType::U32),
            &td((2, 2, 1, 1, 1), DType::U32),
            cc,
        )?;
        Ok(())
    });
    c.err("conv3d: f64", cv, move || {
        ops::conv3d(
            &td((1, 2, 4, 4, 4), DType::F64),
            &td((2, 2, 1, 1, 1), DType::F64),
            cc,
        )?;
        Ok(())
    });
    c.err("conv3d: bf16 input, f32 weight", cv, move || {
        ops::conv3d(&td((1, 2, 4, 4, 4), DType::BF16), &t((2, 2, 1, 1, 1)), cc)?;
        Ok(())
    });
    c.err("conv3d: kernel larger than the input", cv, move || {
        ops::conv3d(
            &t((1, 2, 2, 4, 4)),
            &t((2, 2, 3, 3, 3)),
            c3(1, Padding::Valid, 1),
        )?;
        Ok(())
    });
    c.err("conv3d: empty batch or channels", cv, move || {
        ops::conv3d(&t((1, 0, 4, 4, 4)), &t((2, 0, 1, 1, 1)), cc)?;
        Ok(())
    });
    c.val(
        "conv3d: stride larger than the input == reference",
        move || {
            let (x, w, cfg) = (
                t((1, 2, 3, 3, 3)),
                t((2, 2, 2, 2, 2)),
                c3(9, Padding::Same, 1),
            );
            let y = ops::conv3d(&x, &w, cfg)?;
            close("y", &y, &ops::conv3d_reference(&x, &w, cfg)?, 1e-5)
        },
    );
    c.val("conv3d: non-contiguous input == contiguous", move || {
        let x = noncontig((1, 4, 3, 4, 5));
        let w = t((2, 2, 3, 3, 3));
        let cfg = c3(1, Padding::Same, 1).with_groups(2);
        let y = ops::conv3d(&x, &w, cfg)?;
        close("y", &y, &ops::conv3d(&x.contiguous()?, &w, cfg)?, 0.0)?;
        close("y", &y, &ops::conv3d_reference(&x, &w, cfg)?, 1e-4)
    });

    // adaptive pools and max_pool2d_same
    c.err(
        "adaptive_avg_pool2d: rank-2 input",
        "adaptive_avg_pool2d",
        || {
            ops::adaptive_avg_pool2d(&t((4, 4)), (2, 2))?;
            Ok(())
        },
    );
    c.err(
        "adaptive_max_pool2d: rank-5 input",
        "adaptive_max_pool2d",
        || {
            ops::adaptive_max_pool2d(&t((1, 1, 2, 4, 4)), (2, 2))?;
            Ok(())
        },
    );
    c.val(
        "adaptive_avg_pool2d: unbatched (C, H, W) == batched",
        || {
            let x = t((2, 5, 4));
            let y = ops::adaptive_avg_pool2d(&x, (3, 3))?;
            let yb = ops::adaptive_avg_pool2d(&x.unsqueeze(0)?, (3, 3))?.squeeze(0)?;
            close("y", &y, &yb, 0.0)
        },
    );
    c.err(
        "adaptive_avg_pool2d: output 0",
        "adaptive_avg_pool2d",
        || {
            ops::adaptive_avg_pool2d(&t((1, 2, 4, 4)), (0, 2))?;
            Ok(())
        },
    );
    c.err(
        "adaptive_max_pool2d: output 0",
        "adaptive_max_pool2d",
        || {
            ops::adaptive_max_pool2d(&t((1, 2, 4, 4)), (2, 0))?;
            Ok(())
        },
    );
    c.err("adaptive_max_pool2d: u32", "adaptive_max_pool2d", || {
        ops::adaptive_max_pool2d(&td((1, 2, 4, 4), DType::U32), (2, 2))?;
        Ok(())
    });
    c.err(
        "adaptive_avg_pool2d: empty input",
        "adaptive_avg_pool2d",
        || {
            ops::adaptive_avg_pool2d(&t((1, 2, 0, 4)), (2, 2))?;
            Ok(())
        },
    );
    c.err(
        "adaptive_avg_pool1d: rank-4 input",
        "adaptive_avg_pool1d",
        || {
            ops::adaptive_avg_pool1d(&t((1, 2, 4, 4)), 2)?;
            Ok(())
        },
    );
    c.err(
        "adaptive_max_pool1d: output 0",
        "adaptive_max_pool1d",
        || {
            ops::adaptive_max_pool1d(&t((1, 2, 4)), 0)?;
            Ok(())
        },
    );
    c.val(
        "adaptive_avg_pool2d: output larger than input == reference",
        || {
            let x = t((1, 2, 3, 2));
            let y = ops::adaptive_avg_pool2d(&x, (7, 5))?;
            close(
                "y",
                &y,
                &ops::adaptive_avg_pool2d_reference(&x, (7, 5))?,
                1e-6,
            )
        },
    );
    c.val("adaptive_max_pool2d: non-contiguous == reference", || {
        let x = noncontig((2, 3, 7, 5));
        let y = ops::adaptive_max_pool2d(&x, (3, 2))?;
        close(
            "y",
            &y,
            &ops::adaptive_max_pool2d(&x.contiguous()?, (3, 2))?,
            0.0,
        )?;
        close(
            "y",
            &y,
            &ops::adaptive_max_pool2d_reference(&x, (3, 2))?,
            0.0,
        )
    });
    c.val(
        "adaptive_avg_pool2d: 1x1 input, 1x1 output is the identity",
        || {
            let x = t((2, 3, 1, 1));
            close("y", &ops::adaptive_avg_pool2d(&x, (1, 1))?, &x, 0.0)
        },
    );
    c.err("max_pool2d_same: even kernel", "max_pool2d_same", || {
        ops::max_pool2d_same(&t((1, 2, 4, 4)), 2)?;
        Ok(())
    });
    c.err("max_pool2d_same: kernel 0", "max_pool2d_same", || {
        ops::max_pool2d_same(&t((1, 2, 4, 4)), 0)?;
        Ok(())
    });
    c.err("max_pool2d_same: rank-3", "max_pool2d_same", || {
        ops::max_pool2d_same(&t((2, 4, 4)), 3)?;
        Ok(())
    });
    c.err("max_pool2d_same: i64", "max_pool2d_same", || {
        ops::max_pool2d_same(&td((1, 2, 4, 4), DType::I64), 3)?;
        Ok(())
    });
    c.val(
        "max_pool2d_same: kernel larger than the input == reference",
        || {
            let x = noncontig((1, 2, 3, 2));
            let y = ops::max_pool2d_same(&x, 9)?;
            close("y", &y, &ops::max_pool2d_same_reference(&x, 9)?, 0.0)?;
            // Every output sees the whole map: the per-channel max.
            let m = x.flatten_from(2)?.max_keepdim(2)?.unsqueeze(3)?;
            close("y", &y, &m.broadcast_as(y.shape())?.contiguous()?, 0.0)
        },
    );

    c.list
}
