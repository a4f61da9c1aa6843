//! Bad input for the windowed pools (`max_pool2d`, `avg_pool2d`, their 3-D forms and layers)
//! and adaptive 3-D pooling: zero or overflowing kernels, strides and dilations, padding above
//! half the kernel, no output, wrong ranks and dtypes, huge outputs; and legal edge cases
//! checked against the composition.

use super::*;
use candle_tricks::pool::{
    AdaptiveAvgPool3d, AdaptiveMaxPool3d, AvgPool2d, AvgPool3d, MaxPool2d, MaxPool3d, Pool2dConfig,
    Pool3dConfig,
};

fn p2(k: usize) -> Pool2dConfig {
    Pool2dConfig::new([k, k])
}

fn p3(k: usize) -> Pool3dConfig {
    Pool3dConfig::new([k, k, k])
}

pub(super) fn pool2d_cases() -> Vec<Case> {
    let mut c = Cases::new("pool2d");
    let (mx, av) = ("max_pool2d", "avg_pool2d");
    let (mx3, av3) = ("max_pool3d", "avg_pool3d");
    let x4 = || t((1, 2, 6, 5));
    let x5 = || t((1, 2, 4, 6, 5));
    c.err("max_pool2d: kernel 0", mx, move || {
        ops::max_pool2d(&x4(), &Pool2dConfig::new([2, 0]))?;
        Ok(())
    });
    c.err("avg_pool2d: stride 0", av, move || {
        ops::avg_pool2d(&x4(), &p2(2).with_stride([0, 1]))?;
        Ok(())
    });
    c.err("max_pool2d: dilation 0", mx, move || {
        ops::max_pool2d(&x4(), &p2(2).with_dilation([1, 0]))?;
        Ok(())
    });
    c.err("max_pool2d: padding > kernel / 2", mx, move || {
        ops::max_pool2d(&x4(), &p2(3).with_padding([1, 2]))?;
        Ok(())
    });
    c.err(
        "avg_pool2d: padding > kernel / 2 (kernel 1)",
        av,
        move || {
            ops::avg_pool2d(&x4(), &p2(1).with_padding([1, 0]))?;
            Ok(())
        },
    );
    c.err("avg_pool2d: dilation 2", av, move || {
        ops::avg_pool2d(&x4(), &p2(2).with_dilation([2, 2]))?;
        Ok(())
    });
    c.err("avg_pool2d: divisor_override 0", av, move || {
        ops::avg_pool2d(&x4(), &p2(2).with_divisor_override(0))?;
        Ok(())
    });
    c.err("max_pool2d: kernel larger than the input", mx, move || {
        ops::max_pool2d(&x4(), &p2(7))?;
        Ok(())
    });
    c.err(
        "max_pool2d: dilated extent larger than the input",
        mx,
        move || {
            ops::max_pool2d(&x4(), &p2(3).with_dilation([3, 3]))?;
            Ok(())
        },
    );
    c.err("max_pool2d: rank 3", mx, || {
        ops::max_pool2d(&t((2, 6, 5)), &p2(2))?;
        Ok(())
    });
    c.err("max_pool2d: rank 5", mx, move || {
        ops::max_pool2d(&x5(), &p2(2))?;
        Ok(())
    });
    c.err("avg_pool2d: empty batch", av, || {
        ops::avg_pool2d(&t((0, 2, 6, 5)), &p2(2))?;
        Ok(())
    });
    c.err("max_pool2d: u32", mx, || {
        ops::max_pool2d(&td((1, 2, 4, 4), DType::U32), &p2(2))?;
        Ok(())
    });
    c.err("max_pool3d: rank 4", mx3, move || {
        ops::max_pool3d(&x4(), &p3(2))?;
        Ok(())
    });
    c.err("avg_pool3d: padding > kernel / 2", av3, move || {
        ops::avg_pool3d(&x5(), &p3(2).with_padding([0, 0, 2]))?;
        Ok(())
    });
    c.err("max_pool3d: kernel too deep", mx3, move || {
        ops::max_pool3d(&x5(), &Pool3dConfig::new([5, 1, 1]))?;
        Ok(())
    });
    c.err("MaxPool2d::new: kernel 0", "MaxPool2d", || {
        MaxPool2d::new(p2(0))?;
        Ok(())
    });
    c.err("AvgPool2d::new: dilation", "AvgPool2d", || {
        AvgPool2d::new(p2(2).with_dilation([1, 2]))?;
        Ok(())
    });
    c.err("MaxPool3d::new: padding", "MaxPool3d", || {
        MaxPool3d::new(p3(2).with_padding([1, 2, 1]))?;
        Ok(())
    });
    c.err("AvgPool3d forward: rank 4", av3, move || {
        AvgPool3d::new(p3(2))?.forward(&x4())?;
        Ok(())
    });
    c.err("AdaptiveAvgPool3d::new: 0", "AdaptiveAvgPool3d", || {
        AdaptiveAvgPool3d::new([1, 1, 0])?;
        Ok(())
    });
    c.err(
        "AdaptiveMaxPool3d forward: rank 4",
        "adaptive_max_pool3d",
        move || {
            AdaptiveMaxPool3d::new([1, 1, 1])?.forward(&x4())?;
            Ok(())
        },
    );
    c.err(
        "adaptive_avg_pool3d: f16 ok, i64 not",
        "adaptive_avg_pool3d",
        move || {
            ops::adaptive_avg_pool3d(&x5().to_dtype(DType::F16)?, [2, 2, 2])?;
            ops::adaptive_avg_pool3d(&td((1, 1, 2, 2, 2), DType::I64), [1, 1, 1])?;
            Ok(())
        },
    );
    // Size arithmetic: refused before anything is allocated.
    c.err("max_pool2d: kernel usize::MAX", mx, move || {
        ops::max_pool2d(&x4(), &p2(usize::MAX))?;
        Ok(())
    });
    c.err("max_pool2d: dilation usize::MAX", mx, move || {
        ops::max_pool2d(&x4(), &p2(2).with_dilation([usize::MAX, 1]))?;
        Ok(())
    });
    c.val(
        "avg_pool2d: kernel near usize::MAX, half of it padding: 0",
        move || {
            // One window covering the input; divided by its span squared (about 2^128).
            let k = usize::MAX - 1;
            let y = ops::avg_pool2d(&x4(), &p2(k).with_padding([k / 2, k / 2]))?;
            let m = y.abs()?.max_all()?.to_scalar::<f32>()?;
            ensure(
                y.dims() == [1, 2, 1, 1] && m < 1e-30,
                format!("{y:?} max {m}"),
            )
        },
    );
    c.val(
        "max_pool2d: kernel, stride and padding near usize::MAX, ceil_mode",
        move || {
            // One window over every row: the column maxima.
            let cfg = Pool2dConfig::new([usize::MAX / 4, 1])
                .with_stride([usize::MAX, 1])
                .with_padding([usize::MAX / 8, 0])
                .with_ceil_mode(true);
            let x = x4();
            close("y", &ops::max_pool2d(&x, &cfg)?, &x.max_keepdim(2)?, 0.0)
        },
    );
    c.err(
        "adaptive_max_pool3d: 2^60 outputs",
        "adaptive_max_pool3d",
        move || {
            ops::adaptive_max_pool3d(&x5(), [1 << 20, 1 << 20, 1 << 20])?;
            Ok(())
        },
    );
    c.err(
        "adaptive_avg_pool3d: product overflows",
        "adaptive_avg_pool3d",
        move || {
            ops::adaptive_avg_pool3d(&x5(), [usize::MAX, 2, 2])?;
            Ok(())
        },
    );
    // Legal but unusual: non-contiguous input, ceil_mode's last window, kernel 1.
    c.val("max_pool2d: non-contiguous == composition", || {
        let x = noncontig((2, 3, 7, 6));
        let cfg = p2(3)
            .with_stride([2, 2])
            .with_padding([1, 1])
            .with_ceil_mode(true);
        let want = ops::max_pool2d_reference(&x, &cfg)?;
        close("y", &ops::max_pool2d(&x, &cfg)?, &want, 0.0)
    });
    c.val(
        "avg_pool3d: non-contiguous, count_include_pad off == composition",
        || {
            let x = noncontig((1, 2, 5, 4, 6));
            let cfg = p3(3).with_padding([1, 1, 1]).with_count_include_pad(false);
            let want = ops::avg_pool3d_reference(&x, &cfg)?;
            close("y", &ops::avg_pool3d(&x, &cfg)?, &want, 1e-6)
        },
    );
    c.val("max_pool2d: kernel 1 is the identity", move || {
        let x = x4();
        close("y", &ops::max_pool2d(&x, &p2(1))?, &x, 0.0)
    });
    c.val(
        "adaptive_max_pool3d: output larger than the input",
        move || {
            let x = t((1, 2, 2, 3, 2));
            let want = ops::adaptive_pool3d_reference(&x, [3, 4, 5], PoolMode::Max)?;
            close("y", &ops::adaptive_max_pool3d(&x, [3, 4, 5])?, &want, 0.0)
        },
    );
    c.list
}
