//! Bad input for the `conv` layers.

use super::*;

pub(super) fn conv_cases() -> Vec<Case> {
    let mut c = Cases::new("conv");
    let dcfg = DepthwiseConv2dConfig::default();
    let dwb = "DepthwiseConv2d";
    c.err("DepthwiseConv2d::new: rank-3 weight", dwb, move || {
        DepthwiseConv2d::new(t((2, 3, 3)), None, dcfg)?;
        Ok(())
    });
    c.err(
        "DepthwiseConv2d::new: bias of the wrong size",
        dwb,
        move || {
            DepthwiseConv2d::new(t((4, 1, 3, 3)), Some(t(3)), dcfg)?;
            Ok(())
        },
    );
    c.err("DepthwiseConv2d::new: stride 0", dwb, move || {
        DepthwiseConv2d::new(t((4, 1, 3, 3)), None, dw2(0, Padding::Same, 1))?;
        Ok(())
    });
    c.err("depthwise_conv2d layer: 0 channels", dwb, move || {
        dw_layer(0, 1, 3, dcfg, vb())?;
        Ok(())
    });
    c.err("depthwise_conv2d layer: multiplier 0", dwb, move || {
        dw_layer(2, 0, 3, dcfg, vb())?;
        Ok(())
    });
    c.err("depthwise_conv2d layer: kernel 0", dwb, move || {
        dw_layer(2, 1, 0, dcfg, vb())?;
        Ok(())
    });
    c.err("DepthwiseConv2d forward: wrong channels", dwb, move || {
        let l = dw_layer(2, 1, 3, dcfg, vb())?;
        l.forward(&t((1, 3, 5, 5)))?;
        Ok(())
    });
    c.val(
        "DepthwiseConv2d forward: non-contiguous == contiguous",
        move || {
            let l = dw_layer(3, 2, 3, dcfg, vb())?;
            let x = noncontig((2, 3, 4, 6));
            close("y", &l.forward(&x)?, &l.forward(&x.contiguous()?)?, 0.0)
        },
    );

    let sep = "SeparableConv2d";
    c.err("separable_conv2d: 0 in-channels", sep, move || {
        separable_conv2d(0, 4, 3, scfg(), vb())?;
        Ok(())
    });
    c.err("separable_conv2d: multiplier 0", sep, move || {
        separable_conv2d(2, 4, 3, scfg().with_multiplier(0), vb())?;
        Ok(())
    });
    c.err("separable_conv2d: bn_eps NaN", sep, move || {
        let cfg = SeparableConv2dConfig {
            bn_eps: f64::NAN,
            ..SeparableConv2dConfig::xception()
        };
        separable_conv2d(2, 4, 3, cfg, vb())?;
        Ok(())
    });
    c.err("separable_conv2d: bn_momentum 2", sep, move || {
        let cfg = SeparableConv2dConfig {
            bn_momentum: 2.0,
            ..SeparableConv2dConfig::xception()
        };
        separable_conv2d(2, 4, 3, cfg, vb())?;
        Ok(())
    });
    c.err("separable_conv2d: dilation 0", sep, move || {
        separable_conv2d(2, 4, 3, scfg().with_dilation(0), vb())?;
        Ok(())
    });
    c.err("SeparableConv2d forward: wrong channels", sep, move || {
        let l = separable_conv2d(2, 4, 3, scfg(), vb())?;
        l.forward_t(&t((1, 3, 5, 5)), false)?;
        Ok(())
    });
    c.err("SeparableConv2d forward: rank 3", sep, move || {
        let l = separable_conv2d(2, 4, 3, scfg(), vb())?;
        l.forward_t(&t((2, 5, 5)), false)?;
        Ok(())
    });
    c.val(
        "SeparableConv2d forward: non-contiguous == contiguous",
        move || {
            let l = separable_conv2d(2, 4, 3, SeparableConv2dConfig::xception(), vb())?;
            let x = noncontig((2, 2, 5, 6));
            close(
                "y",
                &l.forward_t(&x, false)?,
                &l.forward_t(&x.contiguous()?, false)?,
                1e-6,
            )
        },
    );

    let asp = "Aspp";
    c.err("aspp: no rates", asp, || {
        aspp(4, 4, AsppConfig::default().with_rates(Vec::new()), vb())?;
        Ok(())
    });
    c.err("aspp: rate 0", asp, || {
        aspp(4, 4, AsppConfig::default().with_rates([1, 0]), vb())?;
        Ok(())
    });
    c.err("aspp: dropout 1.5", asp, || {
        aspp(4, 4, AsppConfig::default().with_dropout(1.5), vb())?;
        Ok(())
    });
    c.err("aspp: dropout NaN", asp, || {
        aspp(4, 4, AsppConfig::default().with_dropout(f32::NAN), vb())?;
        Ok(())
    });
    c.err("aspp: bn_eps negative", asp, || {
        aspp(4, 4, AsppConfig::default().with_bn_eps(-1.0), vb())?;
        Ok(())
    });
    c.err("aspp: bn_momentum NaN", asp, || {
        aspp(4, 4, AsppConfig::default().with_bn_momentum(f64::NAN), vb())?;
        Ok(())
    });
    c.err("aspp: 0 out-channels", asp, || {
        aspp(4, 0, AsppConfig::default(), vb())?;
        Ok(())
    });
    c.err("Aspp forward: wrong channels", asp, || {
        let a = aspp(4, 4, AsppConfig::default().with_rates([1, 2]), vb())?;
        a.forward_t(&t((1, 3, 6, 6)), false)?;
        Ok(())
    });
    c.val(
        "Aspp forward: 1x1 input, non-contiguous batch == contiguous",
        || {
            let a = aspp(2, 3, AsppConfig::default().with_rates([1, 6]), vb())?;
            let x = t((1, 1, 2, 2)).permute((2, 3, 0, 1))?; // (2, 2, 1, 1), strided
            let y = a.forward_t(&x, false)?;
            close("y", &y, &a.forward_t(&x.contiguous()?, false)?, 1e-6)
        },
    );

    let c3b = "Conv3d";
    c.err("Conv3d::new: rank-4 weight", c3b, || {
        Conv3d::new(t((2, 2, 3, 3)), None, Conv3dConfig::default())?;
        Ok(())
    });
    c.err("Conv3d::new: bias of the wrong size", c3b, || {
        Conv3d::new(t((2, 2, 1, 1, 1)), Some(t(3)), Conv3dConfig::default())?;
        Ok(())
    });
    c.err("Conv3d::new: groups not dividing out-channels", c3b, || {
        Conv3d::new(
            t((3, 1, 1, 1, 1)),
            None,
            Conv3dConfig::default().with_groups(2),
        )?;
        Ok(())
    });
    c.err("conv3d layer: 0 in-channels", c3b, || {
        conv3d_layer(0, 2, 3, Conv3dConfig::default(), vb())?;
        Ok(())
    });
    c.err("conv3d layer: groups 0", c3b, || {
        conv3d_layer(2, 2, 3, Conv3dConfig::default().with_groups(0), vb())?;
        Ok(())
    });
    c.err("Conv3d forward: wrong channels", c3b, || {
        let l = conv3d_layer(2, 2, 3, Conv3dConfig::default(), vb())?;
        l.forward(&t((1, 3, 4, 4, 4)))?;
        Ok(())
    });
    c.err("Conv3d forward: rank 4", c3b, || {
        let l = conv3d_layer(2, 2, 3, Conv3dConfig::default(), vb())?;
        l.forward(&t((2, 4, 4, 4)))?;
        Ok(())
    });

    // Padding, output_size, receptive_field
    c.val("output_size: degenerate arguments give None", || {
        ensure(output_size(5, 0, 1, 1, 0, 0).is_none(), "kernel 0")?;
        ensure(output_size(5, 3, 0, 1, 0, 0).is_none(), "stride 0")?;
        ensure(output_size(5, 3, 1, 0, 0, 0).is_none(), "dilation 0")?;
        ensure(output_size(2, 3, 1, 1, 0, 0).is_none(), "kernel > input")?;
        ensure(
            Padding::Same.output_size(3, 3, 10, 1) == Some(1),
            "stride > input",
        )
    });
    let rf = "receptive_field";
    c.err("receptive_field: kernel 0", rf, || {
        receptive_field(&[LayerGeometry::conv(0, 1)])?;
        Ok(())
    });
    c.err("receptive_field: stride 0", rf, || {
        receptive_field(&[LayerGeometry::conv(3, 1), LayerGeometry::conv(3, 0)])?;
        Ok(())
    });
    c.err("receptive_field: dilation 0", rf, || {
        receptive_field(&[LayerGeometry::conv(3, 1).with_dilation(0)])?;
        Ok(())
    });
    c.val("receptive_field: no layers is one pixel", || {
        let r = receptive_field(&[])?;
        ensure(
            r.size == 1 && r.jump == 1 && r.center == 0.0,
            format!("{r:?}"),
        )
    });
    c.list
}
