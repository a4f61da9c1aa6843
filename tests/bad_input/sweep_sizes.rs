//! Size arithmetic: huge padding, stride, dilation and output sizes, overflowing products.

use super::*;

const HUGE: usize = usize::MAX / 2;
const T40: usize = 1 << 40;

/// Impossible sizes: overflowing padding / stride / dilation / output sizes and products. Each
/// must be refused (before any allocation) with an error naming the block, or give the right
/// value. `size_overflow_sweep` runs each in its own process, since an impossible allocation
/// aborts the process (no `catch_unwind` can catch it).
pub(super) fn size_overflow_cases() -> Vec<Case> {
    let mut c = Cases::new("size_overflow");
    let dw = "depthwise_conv2d";
    c.err("dw2d: padding usize::MAX/2", dw, || {
        ops::depthwise_conv2d(
            &t((1, 2, 5, 5)),
            &t((2, 1, 3, 3)),
            dw2(1, Padding::Explicit(HUGE), 1),
        )?;
        Ok(())
    });
    c.err("dw2d: padding 2^40 (huge output)", dw, || {
        ops::depthwise_conv2d(
            &t((1, 2, 5, 5)),
            &t((2, 1, 3, 3)),
            dw2(1, Padding::Explicit(T40), 1),
        )?;
        Ok(())
    });
    c.err("dw2d: dilation usize::MAX/2", dw, || {
        ops::depthwise_conv2d(
            &t((1, 2, 5, 5)),
            &t((2, 1, 3, 3)),
            dw2(1, Padding::Same, HUGE),
        )?;
        Ok(())
    });
    c.either("dw2d: stride usize::MAX (same) == reference", dw, || {
        let (x, w) = (t((1, 2, 5, 5)), t((2, 1, 3, 3)));
        let cfg = dw2(usize::MAX, Padding::Same, 1);
        let y = ops::depthwise_conv2d(&x, &w, cfg)?;
        close(
            "y",
            &y,
            &ops::depthwise_conv2d_reference(&x, &w, cfg)?,
            1e-5,
        )
    });
    c.err("dw1d: padding usize::MAX/2", "depthwise_conv1d", || {
        ops::depthwise_conv1d(
            &t((1, 2, 5)),
            &t((2, 1, 3)),
            dw1(1, Padding::Explicit(HUGE), 1),
        )?;
        Ok(())
    });
    c.err("conv3d: padding 2^40", "conv3d", || {
        ops::conv3d(
            &t((1, 2, 3, 3, 3)),
            &t((2, 2, 1, 1, 1)),
            c3(1, Padding::Explicit(T40), 1),
        )?;
        Ok(())
    });
    c.err("conv3d: dilation usize::MAX/2", "conv3d", || {
        ops::conv3d(
            &t((1, 2, 3, 3, 3)),
            &t((2, 2, 3, 3, 3)),
            c3(1, Padding::Same, HUGE),
        )?;
        Ok(())
    });
    c.err(
        "adaptive_avg_pool2d: output 2^40 x 2^40",
        "adaptive_avg_pool2d",
        || {
            ops::adaptive_avg_pool2d(&t((1, 2, 4, 4)), (T40, T40))?;
            Ok(())
        },
    );
    c.err(
        "adaptive_max_pool1d: output usize::MAX/2",
        "adaptive_max_pool1d",
        || {
            ops::adaptive_max_pool1d(&t((1, 2, 4)), HUGE)?;
            Ok(())
        },
    );
    c.err(
        "AdaptivePool2d forward: output 2^40 x 2^40",
        "adaptive",
        || {
            AdaptivePool2d::new((T40, T40), PoolMode::Max)?.forward(&t((1, 2, 4, 4)))?;
            Ok(())
        },
    );
    c.either(
        "max_pool2d_same: kernel usize::MAX == per-channel max",
        "max_pool2d_same",
        || {
            let x = t((1, 2, 4, 3));
            let y = ops::max_pool2d_same(&x, usize::MAX)?;
            let m = x.flatten_from(2)?.max_keepdim(2)?.unsqueeze(3)?;
            close("y", &y, &m.broadcast_as(y.shape())?.contiguous()?, 0.0)
        },
    );
    c.err(
        "upsample: output 2^40 x 2^40",
        "upsample_bilinear2d",
        || {
            ops::upsample_bilinear2d(&t((1, 2, 3, 3)), T40, T40, false)?;
            Ok(())
        },
    );
    c.err(
        "upsample: output usize::MAX/2 x 2",
        "upsample_bilinear2d",
        || {
            ops::upsample_bilinear2d(&t((1, 2, 3, 3)), HUGE, 2, true)?;
            Ok(())
        },
    );
    c.either(
        "sdpa: causal kv_offset usize::MAX == no mask",
        "scaled_dot_product_attention",
        || {
            let q = t((1, 2, 3, 4));
            let m = AttentionMask::Causal {
                kv_offset: usize::MAX,
            };
            let y = ops::scaled_dot_product_attention(&q, &q, &q, &m, None, 0.0)?;
            let r = ops::sdpa_reference(&q, &q, &q, &AttentionMask::None, None)?;
            close("y", &y, &r, 1e-5)
        },
    );
    c.either(
        "sdpa: sliding window usize::MAX == no mask",
        "scaled_dot_product_attention",
        || {
            let q = t((1, 2, 3, 4));
            let m = AttentionMask::SlidingWindow {
                window: usize::MAX,
                causal: false,
                global: usize::MAX,
            };
            let y = ops::scaled_dot_product_attention(&q, &q, &q, &m, None, 0.0)?;
            let r = ops::sdpa_reference(&q, &q, &q, &AttentionMask::None, None)?;
            close("y", &y, &r, 1e-5)
        },
    );
    c.err(
        "attention_dropout_keep: dims overflowing usize",
        "attention",
        || {
            ops::attention_dropout_keep((1 << 20, 1 << 20, 1 << 20, 1 << 20), 0.5, 0)?;
            Ok(())
        },
    );
    c.err("attention_dropout_keep: 2^40 elements", "attention", || {
        ops::attention_dropout_keep((1, 1, 1 << 20, 1 << 20), 0.5, 0)?;
        Ok(())
    });
    c.err(
        "Dropout2d: mask dims overflowing usize",
        "Dropout2d",
        || {
            // An empty input whose (B, C) mask has (2^40 + 1)^2 elements (wraps to 2^41 + 1).
            let x = Tensor::zeros((T40 + 1, T40 + 1, 0, 1), DType::F32, &cpu())?;
            Dropout2d::new(0.5)?.apply(&x, true)?;
            Ok(())
        },
    );
    c.err(
        "receptive_field: jump overflows (70 stride-2 layers)",
        "receptive_field",
        || {
            let layers = vec![LayerGeometry::conv(3, 2); 70];
            let r = receptive_field(&layers)?;
            Err(Got::Wrong(format!("returned {r:?}")))
        },
    );
    c.err("receptive_field: size overflows", "receptive_field", || {
        let layers = vec![LayerGeometry::conv(HUGE, 1).with_dilation(4)];
        let r = receptive_field(&layers)?;
        Err(Got::Wrong(format!("returned {r:?}")))
    });
    c.val("Padding::output_size: padding usize::MAX is None", || {
        let o = Padding::Explicit(usize::MAX).output_size(5, 3, 1, 1);
        ensure(o.is_none(), format!("{o:?}"))?;
        let o = output_size(5, 3, 1, HUGE, 0, 0);
        ensure(o.is_none(), format!("dilation: {o:?}"))
    });
    c.err(
        "SinusoidalPositionalEncoding: 2^40 x 512 table",
        "SinusoidalPositionalEncoding",
        || {
            SinusoidalPositionalEncoding::new(T40, 512, DType::F32, &cpu())?;
            Ok(())
        },
    );
    c.err("RotaryEmbedding: max_len 2^50", "RotaryEmbedding", || {
        RotaryEmbedding::new(8, 1 << 50, 10_000.0, DType::F32, &cpu())?;
        Ok(())
    });
    c.err(
        "depthwise_conv2d layer: 2^40 channels",
        "DepthwiseConv2d",
        || {
            dw_layer(T40, 1, 3, DepthwiseConv2dConfig::default(), vb())?;
            Ok(())
        },
    );
    c.err("mamba_block: d_model 2^40", "MambaBlock", || {
        mamba_block(MambaConfig::new(T40), vb())?;
        Ok(())
    });
    c.err("MambaBlock zero_state: batch 2^40", "MambaBlock", || {
        mamba_block(MambaConfig::new(8), vb())?.zero_state(T40)?;
        Ok(())
    });
    c.err("upsample_nearest: factor 2^40", "upsample_nearest", || {
        upsample_nearest(&t((1, 1, 2, 2)), T40)?;
        Ok(())
    });
    c.val("StepLr: lr at step usize::MAX <= base", || {
        let lr = StepLr::new(1e-3, 1, 0.5)?.lr(usize::MAX);
        ensure((0.0..=1e-3).contains(&lr), format!("lr {lr}"))
    });
    c.either(
        "CosineWarmRestarts: t_mult usize::MAX, far step",
        "CosineWarmRestarts",
        || {
            let s = CosineWarmRestarts::new(1e-3, 10, usize::MAX)?;
            let lr = s.lr(usize::MAX - 1);
            ensure((0.0..=1e-3).contains(&lr), format!("lr {lr}"))
        },
    );
    c.either("Wsd: phases summing past usize::MAX", "Wsd", || {
        let w = Wsd::new(WsdConfig::new(1e-3, usize::MAX, usize::MAX, usize::MAX))?;
        let lr = w.lr(usize::MAX);
        ensure((0.0..=1e-3).contains(&lr), format!("lr {lr}"))
    });
    c.either("OneCycle: total usize::MAX", "OneCycle", || {
        let o = OneCycle::new(OneCycleConfig::new(1e-3, usize::MAX))?;
        let lr = [o.lr(0), o.lr(usize::MAX / 3), o.lr(usize::MAX)];
        ensure(
            lr.iter().all(|l| (0.0..=1e-3).contains(l)),
            format!("{lr:?}"),
        )
    });
    c.either("Warmup: warmup_steps usize::MAX", "Warmup", || {
        let w = Warmup::new(Constant::new(1e-3)?, usize::MAX, 0.1)?;
        let lr = [w.lr(0), w.lr(usize::MAX)];
        ensure(
            lr.iter().all(|l| (0.0..=1e-3).contains(l)),
            format!("{lr:?}"),
        )
    });
    c.list
}
