//! Bad input for the issue-17 convolution pieces: `conv_transpose2d` / `conv_transpose3d` (ops
//! and layers), `pad2d` / `pad3d` and `Conv2d`'s `padding_mode`.

use super::*;
use candle_tricks::conv::{
    conv_transpose2d as ct2_layer, Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose3d,
};
use candle_tricks::ops::{ConvTransposeConfig, PadMode};

fn ct(s: usize, p: usize, op: usize, d: usize, g: usize) -> ConvTransposeConfig {
    ConvTransposeConfig::default()
        .with_stride(s)
        .with_padding(p)
        .with_output_padding(op)
        .with_dilation(d)
        .with_groups(g)
}

pub(super) fn conv_transpose_cases() -> Vec<Case> {
    let mut c = Cases::new("conv_transpose");
    let ok = ct(2, 1, 1, 1, 1);
    let op2 = |x: Tensor, w: Tensor, b: Option<Tensor>, cfg: ConvTransposeConfig| {
        move || -> Res {
            ops::conv_transpose2d(&x, &w, b.as_ref(), &cfg)?;
            Ok(())
        }
    };
    let x = || t((2, 4, 5, 6));
    let w = || t((4, 3, 3, 3));
    for (name, xs, ws, b, cfg) in [
        ("output_padding = stride", x(), w(), None, ct(2, 1, 2, 1, 1)),
        (
            "output_padding > stride and dilation",
            x(),
            w(),
            None,
            ct(2, 0, 3, 2, 1),
        ),
        (
            "output_padding 1 at stride 1",
            x(),
            w(),
            None,
            ct(1, 0, 1, 1, 1),
        ),
        ("stride 0", x(), w(), None, ct(0, 0, 0, 1, 1)),
        ("dilation 0", x(), w(), None, ct(1, 0, 0, 0, 1)),
        ("groups 0", x(), w(), None, ct(1, 0, 0, 1, 0)),
        ("weight dim 0 != Cin", x(), t((3, 3, 3, 3)), None, ok),
        (
            "groups do not divide Cin",
            x(),
            w(),
            None,
            ok.with_groups(3),
        ),
        ("input rank 3", t((4, 5, 6)), w(), None, ok),
        ("weight rank 5", x(), t((4, 3, 1, 3, 3)), None, ok),
        ("bias shape", x(), w(), Some(t(4)), ok),
        ("bias rank 2", x(), w(), Some(t((1, 3))), ok),
        ("bias dtype", x(), w(), Some(td(3, DType::F16)), ok),
        ("mixed dtypes", x(), td((4, 3, 3, 3), DType::BF16), None, ok),
        (
            "integer dtype",
            td((2, 4, 5, 6), DType::U32),
            td((4, 3, 3, 3), DType::U32),
            None,
            ok,
        ),
        ("zero batch", t((0, 4, 5, 6)), w(), None, ok),
        ("zero width", t((2, 4, 5, 0)), w(), None, ok),
        ("zero kernel", x(), t((4, 3, 0, 3)), None, ok),
        (
            "padding crops everything",
            t((1, 4, 1, 1)),
            w(),
            None,
            ct(1, 2, 0, 1, 1),
        ),
        (
            "stride usize::MAX overflows",
            x(),
            w(),
            None,
            ct(usize::MAX, 0, 0, 1, 1),
        ),
        (
            "dilation usize::MAX overflows",
            x(),
            w(),
            None,
            ct(1, 0, 0, usize::MAX, 1),
        ),
        (
            "padding usize::MAX",
            x(),
            w(),
            None,
            ct(1, usize::MAX, 0, 1, 1),
        ),
        (
            "output of 2^44 values",
            t((1, 4, 2, 2)),
            w(),
            None,
            ct(1 << 22, 0, 0, 1, 1),
        ),
        (
            "output past 2^47 bytes",
            t((1, 4, 2, 2)),
            w(),
            None,
            ct(1 << 30, 0, 0, 1, 1),
        ),
    ] {
        c.err(
            &format!("conv_transpose2d {name}"),
            "conv_transpose2d",
            op2(xs, ws, b, cfg),
        );
    }
    c.err("conv_transpose3d 2-D input", "conv_transpose3d", || {
        ops::conv_transpose3d(&t((2, 4, 5, 6)), &t((4, 3, 3, 3)), None, &ct(1, 0, 0, 1, 1))?;
        Ok(())
    });
    c.err(
        "conv_transpose3d output_padding >= stride",
        "conv_transpose3d",
        || {
            ops::conv_transpose3d(
                &t((1, 2, 3, 3, 3)),
                &t((2, 2, 2, 2, 2)),
                None,
                &ct(2, 0, 2, 1, 1),
            )?;
            Ok(())
        },
    );
    c.err(
        "conv_transpose2d_reference channel mismatch",
        "conv_transpose2d_reference",
        move || {
            ops::conv_transpose2d_reference(&t((2, 4, 5, 6)), &t((3, 3, 3, 3)), None, &ok)?;
            Ok(())
        },
    );
    // Legal but unusual: output_padding >= stride is fine when smaller than the dilation.
    c.val("conv_transpose2d output_padding < dilation", || {
        let (x, w, cfg) = (t((1, 2, 4, 5)), t((2, 3, 3, 3)), ct(1, 1, 1, 2, 1));
        let y = ops::conv_transpose2d(&x, &w, None, &cfg)?;
        ensure(y.dims() == [1, 3, 7, 8], format!("{:?}", y.dims()))?;
        close(
            "op < dilation",
            &y,
            &ops::conv_transpose2d_reference(&x, &w, None, &cfg)?,
            1e-4,
        )
    });
    c.val("conv_transpose2d non-contiguous input", || {
        let (x, w, cfg) = (noncontig((1, 4, 5, 6)), t((4, 2, 4, 4)), ct(2, 1, 0, 1, 2));
        let y = ops::conv_transpose2d(&x, &w, None, &cfg)?;
        close(
            "non-contiguous",
            &y,
            &ops::conv_transpose2d_reference(&x.contiguous()?, &w, None, &cfg)?,
            1e-4,
        )
    });
    // Layers.
    c.err(
        "ConvTranspose2d weight rank",
        "ConvTranspose2d",
        move || {
            ConvTranspose2d::new(t((4, 3, 3)), None, ok)?;
            Ok(())
        },
    );
    c.err("ConvTranspose3d output_padding", "ConvTranspose3d", || {
        ConvTranspose3d::new(t((4, 3, 2, 2, 2)), None, ct(1, 0, 1, 1, 1))?;
        Ok(())
    });
    c.err(
        "ConvTranspose2d groups do not divide out_channels",
        "ConvTranspose2d",
        move || {
            ct2_layer(4, 6, 3, ok.with_groups(4), vb())?;
            Ok(())
        },
    );
    c.err("ConvTranspose2d huge layer", "ConvTranspose2d", move || {
        ct2_layer(1 << 30, 1 << 30, 3, ok, vb())?;
        Ok(())
    });
    c.err(
        "ConvTranspose2d forward channel mismatch",
        "conv_transpose2d",
        move || {
            ConvTranspose2d::new(w(), None, ok)?.forward(&t((2, 3, 5, 6)))?;
            Ok(())
        },
    );

    // Padding.
    let pad = |x: Tensor, p: [usize; 4], m: PadMode| {
        move || -> Res {
            ops::pad2d(&x, p, m)?;
            Ok(())
        }
    };
    for (name, x, p, m) in [
        (
            "reflect pad = height",
            t((1, 2, 3, 4)),
            [0, 0, 3, 0],
            PadMode::Reflect,
        ),
        (
            "reflect on a length-1 axis",
            t((1, 2, 1, 4)),
            [0, 0, 1, 0],
            PadMode::Reflect,
        ),
        (
            "circular pad > width",
            t((1, 2, 3, 4)),
            [5, 0, 0, 0],
            PadMode::Circular,
        ),
        ("rank 2", t((3, 4)), [1, 1, 1, 1], PadMode::Zeros),
        (
            "rank 5",
            t((1, 1, 1, 3, 4)),
            [1, 1, 1, 1],
            PadMode::Replicate,
        ),
        ("empty", t((1, 0, 3, 4)), [1, 1, 1, 1], PadMode::Zeros),
        (
            "integer dtype",
            td((1, 2, 3, 4), DType::I64),
            [1, 1, 1, 1],
            PadMode::Zeros,
        ),
        (
            "pad usize::MAX",
            t((1, 2, 3, 4)),
            [usize::MAX, 0, 0, 0],
            PadMode::Zeros,
        ),
        (
            "output past 2^47 bytes",
            t((1, 2, 3, 4)),
            [1 << 40, 0, 1 << 40, 0],
            PadMode::Replicate,
        ),
        (
            "output past the memory limit",
            t((1, 2, 3, 4)),
            [1 << 22, 0, 1 << 22, 0],
            PadMode::Zeros,
        ),
    ] {
        c.err(&format!("pad2d {name}"), "pad2d", pad(x, p, m));
    }
    c.err("pad3d reflect pad = depth", "pad3d", || {
        ops::pad3d(&t((1, 2, 2, 3, 4)), [0, 0, 0, 0, 2, 0], PadMode::Reflect)?;
        Ok(())
    });
    c.val("pad2d non-contiguous reflect", || {
        let x = noncontig((2, 3, 4, 5));
        let y = ops::pad2d(&x, [2, 1, 3, 0], PadMode::Reflect)?;
        let r = ops::pad2d_reference(&x.contiguous()?, [2, 1, 3, 0], PadMode::Reflect)?;
        close("non-contiguous pad", &y, &r, 0.0)
    });
    c.err("Conv2d padding_mode Constant", "Conv2d", || {
        let conv = Conv2d::new(t((3, 2, 3, 3)), None, Conv2dConfig::default())?;
        conv.with_padding_mode(PadMode::Constant(0.0))?;
        Ok(())
    });
    c.err(
        "Conv2d reflect padding larger than the input",
        "pad2d",
        || {
            let cfg = Conv2dConfig::default().with_padding(Padding::Explicit(3));
            let conv =
                Conv2d::new(t((3, 2, 3, 3)), None, cfg)?.with_padding_mode(PadMode::Reflect)?;
            conv.forward(&t((1, 2, 3, 3)))?;
            Ok(())
        },
    );
    c.list
}
