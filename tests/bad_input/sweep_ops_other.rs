//! Bad input for the norm, softmax, upsample, attention, scan and causal-conv ops.

use super::*;

pub(super) fn other_ops_cases() -> Vec<Case> {
    let mut c = Cases::new("ops");
    // layer_norm / rms_norm / group_norm
    let ln = "layer_norm";
    c.err("layer_norm: eps NaN", ln, || {
        ops::layer_norm(&t((2, 4)), None, None, f64::NAN)?;
        Ok(())
    });
    c.err("layer_norm: eps negative", ln, || {
        ops::layer_norm(&t((2, 4)), None, None, -1e-5)?;
        Ok(())
    });
    c.err("layer_norm: eps +Inf", ln, || {
        ops::layer_norm(&t((2, 4)), None, None, f64::INFINITY)?;
        Ok(())
    });
    c.err("layer_norm: weight of the wrong size", ln, || {
        ops::layer_norm(&t((2, 4)), Some(&t(5)), None, 1e-5)?;
        Ok(())
    });
    c.err("layer_norm: bias dtype mismatch", ln, || {
        ops::layer_norm(&t((2, 4)), Some(&t(4)), Some(&td(4, DType::F16)), 1e-5)?;
        Ok(())
    });
    c.err("layer_norm: u32 input", ln, || {
        ops::layer_norm(&td((2, 4), DType::U32), None, None, 1e-5)?;
        Ok(())
    });
    c.err("layer_norm: scalar input", ln, || {
        ops::layer_norm(&Tensor::new(1f32, &cpu())?, None, None, 1e-5)?;
        Ok(())
    });
    c.err("layer_norm: empty last dim", ln, || {
        ops::layer_norm(&t((2, 0)), None, None, 1e-5)?;
        Ok(())
    });
    c.val("layer_norm: non-contiguous == reference", || {
        let x = noncontig((2, 3, 5));
        let (w, b) = (t(5), t(5));
        let y = ops::layer_norm(&x, Some(&w), Some(&b), 1e-5)?;
        close(
            "y",
            &y,
            &ops::layer_norm_reference(&x, Some(&w), Some(&b), 1e-5)?,
            1e-5,
        )
    });
    c.val(
        "layer_norm: a single feature normalises to the bias",
        || {
            let x = t((3, 1));
            let b = Tensor::new(&[0.25f32], &cpu())?;
            let y = ops::layer_norm(&x, None, Some(&b), 1e-5)?;
            close("y", &y, &Tensor::full(0.25f32, (3, 1), &cpu())?, 1e-6)
        },
    );
    c.err("rms_norm: eps NaN", "rms_norm", || {
        ops::rms_norm(&t((2, 4)), None, f64::NAN)?;
        Ok(())
    });
    c.err("rms_norm: weight rank 2", "rms_norm", || {
        ops::rms_norm(&t((2, 4)), Some(&t((1, 4))), 1e-5)?;
        Ok(())
    });
    c.err("rms_norm: f64", "rms_norm", || {
        ops::rms_norm(&td((2, 4), DType::F64), None, 1e-5)?;
        Ok(())
    });
    c.val("rms_norm: non-contiguous == reference", || {
        let x = noncontig((3, 4, 6));
        let w = t(6);
        let y = ops::rms_norm(&x, Some(&w), 1e-6)?;
        close("y", &y, &ops::rms_norm_reference(&x, Some(&w), 1e-6)?, 1e-5)
    });
    let gn = "group_norm";
    c.err("group_norm: groups 0", gn, || {
        ops::group_norm(&t((2, 4, 3)), 0, None, None, 1e-5)?;
        Ok(())
    });
    c.err("group_norm: groups not dividing the channels", gn, || {
        ops::group_norm(&t((2, 4, 3)), 3, None, None, 1e-5)?;
        Ok(())
    });
    c.err("group_norm: rank-1 input", gn, || {
        ops::group_norm(&t(4), 2, None, None, 1e-5)?;
        Ok(())
    });
    c.err("group_norm: weight of the wrong size", gn, || {
        ops::group_norm(&t((2, 4, 3)), 2, Some(&t(3)), None, 1e-5)?;
        Ok(())
    });
    c.err("group_norm: eps -Inf", gn, || {
        ops::group_norm(&t((2, 4, 3)), 2, None, None, f64::NEG_INFINITY)?;
        Ok(())
    });
    c.val("group_norm: non-contiguous == reference", || {
        let x = noncontig((2, 4, 3, 5));
        let (w, b) = (t(4), t(4));
        let y = ops::group_norm(&x, 2, Some(&w), Some(&b), 1e-5)?;
        let r = ops::group_norm_reference(&x, 2, Some(&w), Some(&b), 1e-5)?;
        close("y", &y, &r, 1e-5)
    });

    // softmax
    let sm = "softmax_last_dim";
    c.err("softmax: scalar", sm, || {
        ops::softmax_last_dim(&Tensor::new(1f32, &cpu())?)?;
        Ok(())
    });
    c.err("softmax: u32", sm, || {
        ops::softmax_last_dim(&td((2, 3), DType::U32))?;
        Ok(())
    });
    c.err("softmax: empty last dim", sm, || {
        ops::softmax_last_dim(&t((2, 0)))?;
        Ok(())
    });
    c.val("softmax: non-contiguous == reference", || {
        let x = noncontig((2, 5, 7));
        let y = ops::softmax_last_dim(&x)?;
        close("y", &y, &ops::softmax_last_dim_reference(&x)?, 1e-6)
    });
    c.val("softmax: a single logit is 1", || {
        let y = ops::softmax_last_dim(&t((4, 1)))?;
        close("y", &y, &Tensor::ones((4, 1), DType::F32, &cpu())?, 0.0)
    });

    // upsample_bilinear2d
    let up = "upsample_bilinear2d";
    c.err("upsample: rank-3", up, || {
        ops::upsample_bilinear2d(&t((2, 3, 3)), 4, 4, false)?;
        Ok(())
    });
    c.err("upsample: output 0", up, || {
        ops::upsample_bilinear2d(&t((1, 2, 3, 3)), 0, 4, false)?;
        Ok(())
    });
    c.err("upsample: u32", up, || {
        ops::upsample_bilinear2d(&td((1, 2, 3, 3), DType::U32), 4, 4, true)?;
        Ok(())
    });
    c.err("upsample: empty input", up, || {
        ops::upsample_bilinear2d(&t((1, 2, 0, 3)), 4, 4, true)?;
        Ok(())
    });
    c.val("upsample: non-contiguous == reference", || {
        let x = noncontig((1, 2, 3, 4));
        for ac in [false, true] {
            let y = ops::upsample_bilinear2d(&x, 7, 5, ac)?;
            close(
                "y",
                &y,
                &ops::upsample_bilinear2d_reference(&x, 7, 5, ac)?,
                1e-5,
            )?;
        }
        Ok(())
    });
    c.val("upsample: 1x1 input gives a constant map", || {
        let x = t((1, 2, 1, 1));
        for ac in [false, true] {
            let y = ops::upsample_bilinear2d(&x, 3, 4, ac)?;
            close("y", &y, &x.broadcast_as((1, 2, 3, 4))?.contiguous()?, 1e-6)?;
        }
        Ok(())
    });

    // scaled_dot_product_attention
    let sd = "scaled_dot_product_attention";
    let q = || t((1, 2, 4, 8));
    let sdpa = |q: &Tensor, k: &Tensor, v: &Tensor, m: &AttentionMask| -> Res {
        ops::scaled_dot_product_attention(q, k, v, m, None, 0.0)?;
        Ok(())
    };
    c.err("sdpa: rank-3 q", sd, move || {
        sdpa(&t((2, 4, 8)), &q(), &q(), &AttentionMask::None)
    });
    c.err("sdpa: head-dim mismatch", sd, move || {
        sdpa(&q(), &t((1, 2, 4, 6)), &q(), &AttentionMask::None)
    });
    c.err("sdpa: k and v lengths differ", sd, move || {
        sdpa(&q(), &q(), &t((1, 2, 5, 8)), &AttentionMask::None)
    });
    c.err("sdpa: batch mismatch", sd, move || {
        sdpa(
            &q(),
            &t((2, 2, 4, 8)),
            &t((2, 2, 4, 8)),
            &AttentionMask::None,
        )
    });
    c.err("sdpa: q heads not a multiple of kv heads", sd, move || {
        sdpa(&t((1, 3, 4, 8)), &q(), &q(), &AttentionMask::None)
    });
    c.err("sdpa: f16 k with f32 q", sd, move || {
        sdpa(
            &q(),
            &td((1, 2, 4, 8), DType::F16),
            &q(),
            &AttentionMask::None,
        )
    });
    c.err("sdpa: u32", sd, move || {
        let x = td((1, 2, 4, 8), DType::U32);
        sdpa(&x, &x, &x, &AttentionMask::None)
    });
    c.err("sdpa: empty sequence", sd, move || {
        let x = t((1, 2, 0, 8));
        sdpa(&x, &x, &x, &AttentionMask::None)
    });
    for (name, p) in [
        ("NaN", f64::NAN),
        ("1.5", 1.5),
        ("-0.1", -0.1),
        ("1.0", 1.0),
    ] {
        c.err(&format!("sdpa: dropout_p {name}"), sd, move || {
            ops::scaled_dot_product_attention(&q(), &q(), &q(), &AttentionMask::None, None, p)?;
            Ok(())
        });
    }
    for (name, s) in [("NaN", f64::NAN), ("Inf", f64::INFINITY)] {
        c.err(&format!("sdpa: scale {name}"), sd, move || {
            ops::scaled_dot_product_attention(&q(), &q(), &q(), &AttentionMask::None, Some(s), 0.)?;
            Ok(())
        });
    }
    c.err("sdpa: bool mask of the wrong shape", sd, move || {
        let m = Tensor::ones((3, 3), DType::U8, &cpu())?;
        sdpa(&q(), &q(), &q(), &AttentionMask::Bool(m))
    });
    c.err("sdpa: bool mask of dtype f32", sd, move || {
        let m = Tensor::ones((4, 4), DType::F32, &cpu())?;
        sdpa(&q(), &q(), &q(), &AttentionMask::Bool(m))
    });
    c.err("sdpa: additive mask of dtype u8", sd, move || {
        let m = Tensor::zeros((4, 4), DType::U8, &cpu())?;
        sdpa(&q(), &q(), &q(), &AttentionMask::Additive(m))
    });
    c.err("sdpa: additive mask of the wrong shape", sd, move || {
        sdpa(&q(), &q(), &q(), &AttentionMask::Additive(t((4, 5))))
    });
    c.err("sdpa: key padding of the wrong batch", sd, move || {
        sdpa(&q(), &q(), &q(), &AttentionMask::KeyPadding(vec![4, 4]))
    });
    c.err("sdpa: key padding longer than the keys", sd, move || {
        sdpa(&q(), &q(), &q(), &AttentionMask::KeyPadding(vec![5]))
    });
    c.err("sdpa: sliding window 0", sd, move || {
        let m = AttentionMask::SlidingWindow {
            window: 0,
            causal: true,
            global: 0,
        };
        sdpa(&q(), &q(), &q(), &m)
    });
    c.val("sdpa: non-contiguous q, k, v == reference", move || {
        let q = t((1, 2, 8, 5)).transpose(2, 3)?; // (1, 2, 5, 8)
        let k = noncontig((1, 2, 6, 8));
        let v = noncontig((1, 2, 6, 8));
        let m = AttentionMask::Causal { kv_offset: 1 };
        let y = ops::scaled_dot_product_attention(&q, &k, &v, &m, None, 0.0)?;
        let r = ops::sdpa_reference(&q, &k, &v, &m, None)?;
        close("y", &y, &r, 1e-5)?;
        let yc = ops::scaled_dot_product_attention(
            &q.contiguous()?,
            &k.contiguous()?,
            &v.contiguous()?,
            &m,
            None,
            0.0,
        )?;
        close("y", &y, &yc, 0.0)
    });
    c.val(
        "sdpa: window wider than the sequence == no mask",
        move || {
            let m = AttentionMask::SlidingWindow {
                window: 1000,
                causal: false,
                global: 0,
            };
            let (q, k) = (t((1, 2, 3, 4)), noncontig((1, 2, 3, 4)));
            let y = ops::scaled_dot_product_attention(&q, &k, &k, &m, None, 0.0)?;
            let r = ops::sdpa_reference(&q, &k, &k, &AttentionMask::None, None)?;
            close("y", &y, &r, 1e-5)
        },
    );
    c.err("attention_dropout_keep: p NaN", "attention", || {
        ops::attention_dropout_keep((1, 1, 2, 2), f64::NAN, 0)?;
        Ok(())
    });

    // selective_scan
    let ss = "selective_scan";
    let scan = |u: Tensor, dl: Tensor, a: Tensor, b: Tensor, cc: Tensor| -> Res {
        ops::selective_scan(&u, &dl, &a, &b, &cc, &SelectiveScanConfig::default())?;
        Ok(())
    };
    let a = || tpos((4, 3)).neg().unwrap();
    c.err("selective_scan: rank-2 u", ss, move || {
        scan(t((4, 5)), tpos((4, 5)), a(), t((1, 3, 5)), t((1, 3, 5)))
    });
    c.err("selective_scan: delta shape mismatch", ss, move || {
        scan(
            t((1, 4, 5)),
            tpos((1, 4, 6)),
            a(),
            t((1, 3, 5)),
            t((1, 3, 5)),
        )
    });
    c.err("selective_scan: A with the wrong D", ss, move || {
        scan(
            t((1, 4, 5)),
            tpos((1, 4, 5)),
            t((3, 3)),
            t((1, 3, 5)),
            t((1, 3, 5)),
        )
    });
    c.err("selective_scan: B with the wrong N", ss, move || {
        scan(
            t((1, 4, 5)),
            tpos((1, 4, 5)),
            a(),
            t((1, 2, 5)),
            t((1, 3, 5)),
        )
    });
    c.err("selective_scan: C rank 2", ss, move || {
        scan(t((1, 4, 5)), tpos((1, 4, 5)), a(), t((1, 3, 5)), t((3, 5)))
    });
    c.err("selective_scan: groups not dividing D", ss, move || {
        scan(
            t((1, 4, 5)),
            tpos((1, 4, 5)),
            a(),
            t((1, 3, 3, 5)),
            t((1, 3, 3, 5)),
        )
    });
    c.err("selective_scan: f16 delta with f32 u", ss, move || {
        let d = td((1, 4, 5), DType::F16);
        scan(t((1, 4, 5)), d, a(), t((1, 3, 5)), t((1, 3, 5)))
    });
    c.err("selective_scan: u32", ss, move || {
        let u = td((1, 4, 5), DType::U32);
        scan(u.clone(), u, a(), t((1, 3, 5)), t((1, 3, 5)))
    });
    c.err("selective_scan: empty L", ss, move || {
        scan(
            t((1, 4, 0)),
            tpos((1, 4, 0)),
            a(),
            t((1, 3, 0)),
            t((1, 3, 0)),
        )
    });
    c.err("selective_scan: chunk 0", ss, move || {
        let (u, dl, b) = (t((1, 4, 5)), tpos((1, 4, 5)), t((1, 3, 5)));
        let cfg = SelectiveScanConfig::default().with_chunk(0);
        ops::selective_scan(&u, &dl, &a(), &b, &b, &cfg)?;
        Ok(())
    });
    c.err("selective_scan: D of the wrong size", ss, move || {
        let (u, dl, b, d) = (t((1, 4, 5)), tpos((1, 4, 5)), t((1, 3, 5)), t(3));
        let cfg = SelectiveScanConfig::default().with_d(&d);
        ops::selective_scan(&u, &dl, &a(), &b, &b, &cfg)?;
        Ok(())
    });
    c.err("selective_scan: z of the wrong shape", ss, move || {
        let (u, dl, b, z) = (t((1, 4, 5)), tpos((1, 4, 5)), t((1, 3, 5)), t((1, 4, 4)));
        let cfg = SelectiveScanConfig::default().with_z(&z);
        ops::selective_scan(&u, &dl, &a(), &b, &b, &cfg)?;
        Ok(())
    });
    c.err(
        "selective_scan: delta_bias of the wrong size",
        ss,
        move || {
            let (u, dl, b, db) = (t((1, 4, 5)), tpos((1, 4, 5)), t((1, 3, 5)), t(5));
            let cfg = SelectiveScanConfig::default().with_delta_bias(&db);
            ops::selective_scan(&u, &dl, &a(), &b, &b, &cfg)?;
            Ok(())
        },
    );
    c.val(
        "selective_scan: non-contiguous inputs == reference",
        move || {
            let u = noncontig((2, 4, 6));
            let dl = (noncontig((2, 4, 6)).abs()? * 0.5)?;
            let b = noncontig((2, 3, 6));
            let cc = t((2, 6, 3)).transpose(1, 2)?;
            let (d, z) = (t(4), noncontig((2, 4, 6)));
            let cfg = SelectiveScanConfig::default()
                .with_d(&d)
                .with_z(&z)
                .with_delta_softplus(true)
                .with_return_last_state(true)
                .with_chunk(4);
            let (y, s) = ops::selective_scan(&u, &dl, &a(), &b, &cc, &cfg)?;
            let (yr, sr) = ops::selective_scan_reference(&u, &dl, &a(), &b, &cc, &cfg)?;
            close("y", &y, &yr, 1e-4)?;
            close("state", &s.unwrap(), &sr.unwrap(), 1e-4)
        },
    );

    // causal_conv1d
    let cc1 = "causal_conv1d";
    c.err("causal_conv1d: rank-2 input", cc1, || {
        ops::causal_conv1d(&t((4, 5)), &t((4, 3)), None, false)?;
        Ok(())
    });
    c.err("causal_conv1d: weight channel mismatch", cc1, || {
        ops::causal_conv1d(&t((1, 4, 5)), &t((3, 3)), None, false)?;
        Ok(())
    });
    c.err("causal_conv1d: weight K = 0", cc1, || {
        ops::causal_conv1d(&t((1, 4, 5)), &t((4, 0)), None, false)?;
        Ok(())
    });
    c.err("causal_conv1d: bias of the wrong size", cc1, || {
        ops::causal_conv1d(&t((1, 4, 5)), &t((4, 3)), Some(&t(3)), true)?;
        Ok(())
    });
    c.err("causal_conv1d: i64", cc1, || {
        let x = td((1, 4, 5), DType::I64);
        ops::causal_conv1d(&x, &td((4, 3), DType::I64), None, false)?;
        Ok(())
    });
    c.err("causal_conv1d: bf16 weight with f32 input", cc1, || {
        ops::causal_conv1d(&t((1, 4, 5)), &td((4, 3), DType::BF16), None, false)?;
        Ok(())
    });
    c.val(
        "causal_conv1d: non-contiguous, kernel longer than L == reference",
        || {
            let x = noncontig((2, 4, 3));
            let w = noncontig((4, 5));
            let b = t(4);
            let y = ops::causal_conv1d(&x, &w, Some(&b), true)?;
            close(
                "y",
                &y,
                &ops::causal_conv1d_reference(&x, &w, Some(&b), true)?,
                1e-5,
            )
        },
    );
    c.list
}
