//! Bad input for the issue-17 blocks: [`mb_conv`], [`convnext_block`] and the no-skip
//! [`UpBlock`](candle_tricks::blocks::UpBlock).

use super::*;
use candle_nn::Activation;
use candle_tricks::blocks::{convnext_block, mb_conv, ConvNextBlockConfig, MbConvConfig};

fn mcfg() -> MbConvConfig {
    MbConvConfig::default()
}

fn ccfg() -> ConvNextBlockConfig {
    ConvNextBlockConfig::default()
}

fn no_skip() -> UpBlockConfig {
    UpBlockConfig::default().with_skip(false)
}

pub(super) fn blocks17_cases() -> Vec<Case> {
    let mut c = Cases::new("blocks17");
    let (mb, mbc) = ("MbConv", "MbConvConfig");
    let bad_cfgs = [
        ("expand_ratio 0.5", mcfg().with_expand_ratio(0.5)),
        ("expand_ratio NaN", mcfg().with_expand_ratio(f64::NAN)),
        ("expand_ratio inf", mcfg().with_expand_ratio(f64::INFINITY)),
        ("kernel 0", mcfg().with_kernel_size(0)),
        ("stride 0", mcfg().with_stride(0)),
        ("dilation 0", mcfg().with_dilation(0)),
        ("se_ratio 0", mcfg().with_se_ratio(Some(0.0))),
        ("se_ratio NaN", mcfg().with_se_ratio(Some(f64::NAN))),
        ("drop_path 1", mcfg().with_drop_path(1.0)),
        ("bn eps 0", mcfg().with_bn(bcfg().with_eps(0.0))),
    ];
    for (name, cfg) in bad_cfgs {
        c.err(&format!("mb_conv: {name}"), mbc, move || {
            mb_conv(8, 8, cfg, vb())?;
            Ok(())
        });
    }
    c.err("mb_conv: in_ch 0", mb, || {
        mb_conv(0, 8, mcfg(), vb())?;
        Ok(())
    });
    c.err("mb_conv: out_ch 0", mb, || {
        mb_conv(8, 0, mcfg(), vb())?;
        Ok(())
    });
    c.err("mb_conv: SE width rounds to 0", mb, || {
        mb_conv(2, 2, mcfg().with_se_ratio(Some(0.1)), vb())?;
        Ok(())
    });
    c.err("mb_conv: in_ch x expand_ratio overflows", mb, || {
        mb_conv(usize::MAX / 4, 8, mcfg(), vb())?;
        Ok(())
    });
    c.err("mb_conv: huge kernel (weight size overflows)", mb, || {
        mb_conv(8, 8, mcfg().with_kernel_size(1 << 33), vb())?;
        Ok(())
    });
    c.err("mb_conv: dilation x kernel overflows", mb, || {
        mb_conv(8, 8, mcfg().with_dilation(usize::MAX), vb())?;
        Ok(())
    });
    c.err("mb_conv: checkpoint conv_dw of the wrong shape", mb, || {
        let cfg = mcfg().with_expand_ratio(1.0).with_se_ratio(None);
        mb_conv(4, 4, cfg, vb_of(vec![("conv_dw.weight", t((4, 1, 5, 5)))]))?;
        Ok(())
    });
    let fwd = [
        ("rank 3", t((8, 5, 5))),
        ("wrong channels", t((1, 4, 5, 5))),
        ("zero batch", t((0, 8, 5, 5))),
        ("f64", td((1, 8, 5, 5), DType::F64)),
        ("u32", td((1, 8, 5, 5), DType::U32)),
    ];
    for (name, x) in fwd.clone() {
        c.err(&format!("MbConv forward: {name}"), mb, move || {
            mb_conv(8, 8, mcfg(), vb())?.forward_t(&x, true)?;
            Ok(())
        });
    }
    c.val("MbConv forward: non-contiguous == contiguous", || {
        let b = mb_conv(4, 4, mcfg().with_act(Activation::Relu6), vb())?;
        let x = noncontig((2, 4, 5, 6));
        let y = b.forward_t(&x, false)?;
        close("y", &y, &b.forward_t(&x.contiguous()?, false)?, 1e-6)
    });
    c.val("MbConv forward: 1x1 input, stride 2 -> 1x1", || {
        let b = mb_conv(4, 8, mcfg().with_stride(2), vb())?;
        let y = b.forward_t(&t((2, 4, 1, 1)), true)?;
        ensure(y.dims() == [2, 8, 1, 1], format!("shape {:?}", y.dims()))
    });

    let (cn, cnc) = ("ConvNextBlock", "ConvNextBlockConfig");
    let bad_cfgs = [
        ("kernel 0", ccfg().with_kernel_size(0)),
        ("dilation 0", ccfg().with_dilation(0)),
        ("mlp_ratio 0", ccfg().with_mlp_ratio(0.0)),
        ("mlp_ratio NaN", ccfg().with_mlp_ratio(f64::NAN)),
        (
            "ls_init_value inf",
            ccfg().with_ls_init_value(Some(f64::INFINITY)),
        ),
        ("drop_path NaN", ccfg().with_drop_path(f32::NAN)),
        ("eps -1", ccfg().with_eps(-1.0)),
    ];
    for (name, cfg) in bad_cfgs {
        c.err(&format!("convnext_block: {name}"), cnc, move || {
            convnext_block(8, cfg, vb())?;
            Ok(())
        });
    }
    c.err("convnext_block: channels 0", cn, || {
        convnext_block(0, ccfg(), vb())?;
        Ok(())
    });
    c.err("convnext_block: MLP width rounds to 0", cn, || {
        convnext_block(2, ccfg().with_mlp_ratio(0.25), vb())?;
        Ok(())
    });
    c.err("convnext_block: MLP width overflows", cn, || {
        convnext_block(usize::MAX / 2, ccfg(), vb())?;
        Ok(())
    });
    c.err("convnext_block: dilation x kernel overflows", cn, || {
        convnext_block(8, ccfg().with_dilation(usize::MAX), vb())?;
        Ok(())
    });
    c.err(
        "convnext_block: checkpoint fc1 of the wrong shape",
        cn,
        || {
            let w = vec![
                ("conv_dw.weight", t((4, 1, 7, 7))),
                ("conv_dw.bias", t(4)),
                ("norm.weight", t(4)),
                ("norm.bias", t(4)),
                ("mlp.fc1.weight", t((16, 5))),
            ];
            convnext_block(4, ccfg(), vb_of(w))?;
            Ok(())
        },
    );
    for (name, x) in fwd {
        c.err(&format!("ConvNextBlock forward: {name}"), cn, move || {
            convnext_block(8, ccfg(), vb())?.forward_t(&x, true)?;
            Ok(())
        });
    }
    c.val(
        "ConvNextBlock forward: non-contiguous == contiguous",
        || {
            let b = convnext_block(4, ccfg().with_ls_init_value(Some(1.0)), vb())?;
            let x = noncontig((2, 4, 5, 6));
            let y = b.forward_t(&x, false)?;
            close("y", &y, &b.forward_t(&x.contiguous()?, false)?, 1e-6)
        },
    );

    let up = "UpBlock";
    c.val("UpBlock without skip: output has the skip's size", || {
        let b = up_block(8, 4, 8, no_skip(), vb())?;
        let y = b.forward_t(&t((2, 8, 3, 4)), &t((2, 4, 7, 9)), true)?;
        ensure(y.dims() == [2, 8, 7, 9], format!("shape {:?}", y.dims()))
    });
    c.val(
        "UpBlock without skip: the skip's values are not used",
        || {
            let b = up_block(8, 4, 8, no_skip(), vb())?;
            let x = t((1, 8, 3, 3));
            let y1 = b.forward_t(&x, &t((1, 4, 6, 6)), false)?;
            let y2 = b.forward_t(&x, &t((1, 4, 6, 6)).affine(-3.0, 1.0)?, false)?;
            close("y", &y1, &y2, 0.0)
        },
    );
    c.err(
        "UpBlock without skip: skip of another batch size",
        up,
        || {
            up_block(8, 4, 8, no_skip(), vb())?.forward_t(
                &t((2, 8, 3, 3)),
                &t((1, 4, 6, 6)),
                true,
            )?;
            Ok(())
        },
    );
    c.err("UpBlock without skip: skip channels 0", up, || {
        up_block(8, 0, 8, no_skip(), vb())?;
        Ok(())
    });
    c.err("UpBlock: skip + out channels overflow", up, || {
        up_block(8, usize::MAX, 8, UpBlockConfig::default(), vb())?;
        Ok(())
    });
    c.list
}
