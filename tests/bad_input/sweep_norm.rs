//! Bad input for the `norm` blocks.

use super::*;

pub(super) fn norm_cases() -> Vec<Case> {
    let mut c = Cases::new("norm");
    let bn = "BatchNorm";
    for (name, cfg) in [
        ("eps NaN", bcfg().with_eps(f64::NAN)),
        ("eps negative", bcfg().with_eps(-1e-5)),
        ("momentum NaN", bcfg().with_momentum(f64::NAN)),
        ("momentum 1.5", bcfg().with_momentum(1.5)),
        ("momentum -0.1", bcfg().with_momentum(-0.1)),
    ] {
        c.err(&format!("batch_norm: {name}"), bn, move || {
            batch_norm(3, cfg, vb())?;
            Ok(())
        });
    }
    c.err("batch_norm: 0 channels", bn, || {
        batch_norm(0, bcfg(), vb())?;
        Ok(())
    });
    c.err("BatchNorm::new: running mean of the wrong size", bn, || {
        BatchNorm::new(3, None, Some((t(4), t(3))), BatchNormConfig::default())?;
        Ok(())
    });
    c.err("BatchNorm::new: weight of dtype u32", bn, || {
        let w = td(3, DType::U32);
        BatchNorm::new(3, Some((w.clone(), w)), None, BatchNormConfig::default())?;
        Ok(())
    });
    c.err("BatchNorm forward: wrong channels", bn, || {
        let b = batch_norm(3, bcfg(), vb())?;
        b.forward_t(&t((2, 4, 5)), true)?;
        Ok(())
    });
    c.err("BatchNorm forward: rank 1", bn, || {
        let b = batch_norm(3, bcfg(), vb())?;
        b.forward_t(&t(3), false)?;
        Ok(())
    });
    c.err("BatchNorm forward: u32", bn, || {
        let b = batch_norm(3, bcfg(), vb())?;
        b.forward_t(&td((2, 3, 4), DType::U32), false)?;
        Ok(())
    });
    c.err(
        "BatchNorm forward (train): a single value per channel",
        bn,
        || {
            let b = batch_norm(3, bcfg(), vb())?;
            b.forward_t(&t((1, 3, 1, 1)), true)?;
            Ok(())
        },
    );
    c.val("BatchNorm forward: non-contiguous == reference", || {
        let b = batch_norm(3, bcfg(), vb())?;
        let x = noncontig((2, 3, 4, 5));
        close(
            "train",
            &b.forward_train_eval(&x, false)?,
            &b.forward_reference(&x, false)?,
            1e-5,
        )
    });
    let gnb = "GroupNorm";
    c.err("group_norm layer: groups 0", gnb, || {
        group_norm_layer(0, 4, GroupNormConfig::default(), vb())?;
        Ok(())
    });
    c.err("group_norm layer: groups not dividing", gnb, || {
        group_norm_layer(3, 4, GroupNormConfig::default(), vb())?;
        Ok(())
    });
    c.err("group_norm layer: eps NaN", gnb, || {
        group_norm_layer(2, 4, GroupNormConfig::default().with_eps(f64::NAN), vb())?;
        Ok(())
    });
    c.err("GroupNorm::new: weight of the wrong size", gnb, || {
        GroupNorm::new(2, 4, Some(t(3)), Some(t(4)), GroupNormConfig::default())?;
        Ok(())
    });
    c.err("GroupNorm forward: wrong channels", gnb, || {
        let g = group_norm_layer(2, 4, GroupNormConfig::default(), vb())?;
        g.forward(&t((2, 6, 3)))?;
        Ok(())
    });
    let inb = "InstanceNorm";
    c.err("instance_norm: momentum 2", inb, || {
        let cfg = InstanceNormConfig {
            track_running_stats: true,
            momentum: 2.0,
            ..Default::default()
        };
        instance_norm(3, cfg, vb())?;
        Ok(())
    });
    c.err("instance_norm: eps -1", inb, || {
        let cfg = InstanceNormConfig {
            eps: -1.0,
            ..Default::default()
        };
        instance_norm(3, cfg, vb())?;
        Ok(())
    });
    c.err("InstanceNorm forward: wrong channels", inb, || {
        let cfg = InstanceNormConfig {
            affine: true,
            ..Default::default()
        };
        let n = instance_norm(3, cfg, vb())?;
        n.forward_t(&t((2, 4, 5)), true)?;
        Ok(())
    });
    c.err("InstanceNorm forward: rank 2", inb, || {
        let n = instance_norm(3, InstanceNormConfig::default(), vb())?;
        n.forward_t(&t((2, 3)), true)?;
        Ok(())
    });
    let lnb = "LayerNorm";
    c.err("layer_norm layer: dim 0", lnb, || {
        layer_norm_layer(0, LayerNormConfig::default(), vb())?;
        Ok(())
    });
    c.err("layer_norm layer: eps Inf", lnb, || {
        let cfg = LayerNormConfig {
            eps: f64::INFINITY,
            ..Default::default()
        };
        layer_norm_layer(4, cfg, vb())?;
        Ok(())
    });
    c.err("LayerNorm::new: bias of the wrong size", lnb, || {
        LayerNorm::new(4, Some(t(4)), Some(t(5)), LayerNormConfig::default())?;
        Ok(())
    });
    c.err("LayerNorm forward: wrong last dim", lnb, || {
        let l = layer_norm_layer(4, LayerNormConfig::default(), vb())?;
        l.forward(&t((2, 5)))?;
        Ok(())
    });
    c.val("LayerNorm forward: non-contiguous == contiguous", || {
        let l = layer_norm_layer(4, LayerNormConfig::default(), vb())?;
        let x = t((2, 4, 3)).transpose(1, 2)?;
        close("y", &l.forward(&x)?, &l.forward(&x.contiguous()?)?, 0.0)
    });
    let l2 = "LayerNorm2d";
    c.err("layer_norm2d: eps NaN", l2, || {
        let cfg = LayerNorm2dConfig {
            eps: f64::NAN,
            ..Default::default()
        };
        layer_norm2d(3, cfg, vb())?;
        Ok(())
    });
    c.err("LayerNorm2d forward: rank 3", l2, || {
        let l = layer_norm2d(3, LayerNorm2dConfig::default(), vb())?;
        l.forward(&t((3, 4, 4)))?;
        Ok(())
    });
    c.err("LayerNorm2d forward: wrong channels", l2, || {
        let l = layer_norm2d(3, LayerNorm2dConfig::default(), vb())?;
        l.forward(&t((1, 4, 4, 4)))?;
        Ok(())
    });
    c.val(
        "LayerNorm2d forward: 1x1 spatial, non-contiguous == contiguous",
        || {
            let l = layer_norm2d(3, LayerNorm2dConfig::default(), vb())?;
            let x = t((1, 1, 2, 3)).permute((2, 3, 0, 1))?; // (2, 3, 1, 1)
            close("y", &l.forward(&x)?, &l.forward(&x.contiguous()?)?, 1e-6)
        },
    );
    let rmb = "RmsNorm";
    c.err("rms_norm layer: eps NaN", rmb, || {
        let cfg = RmsNormConfig {
            eps: f64::NAN,
            ..Default::default()
        };
        rms_norm_layer(4, cfg, vb())?;
        Ok(())
    });
    c.err("RmsNorm::new: weight rank 2", rmb, || {
        RmsNorm::new(4, Some(t((1, 4))), RmsNormConfig::default())?;
        Ok(())
    });
    c.err("RmsNorm forward: wrong last dim", rmb, || {
        let l = rms_norm_layer(4, RmsNormConfig::default(), vb())?;
        l.forward(&t((2, 3)))?;
        Ok(())
    });
    let cr = "norm::create";
    for spec in [
        "", "bogus", "group:0", "group:x", "group:3", "batch:2", "group:-1",
    ] {
        c.err(
            &format!("norm::create({spec:?}) with 8 channels"),
            cr,
            move || {
                norm::create(spec, 8, vb())?;
                Ok(())
            },
        );
    }
    c.err("norm::create(\"layer\") with 0 channels", cr, || {
        norm::create("layer", 0, vb())?;
        Ok(())
    });
    c.val("norm::create(\" GROUP : 4 \") parses", || {
        let n = norm::create(" GROUP : 4 ", 8, vb())?;
        ensure(matches!(n, norm::Norm::Group(_)), "not a group norm")
    });
    c.list
}
