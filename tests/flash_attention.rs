//! scaled_dot_product_attention: forward and gradients against the materialised reference (f64
//! autograd) for every mask mode, GQA, odd lengths and partial tiles; finite differences;
//! f16/bf16; PyTorch fixtures; bad inputs.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_tricks::ops::{
    attention_dropout_keep, scaled_dot_product_attention, scaled_dot_product_attention_seeded,
    sdpa_dropout_reference, sdpa_reference, AttentionMask,
};
use common::*;

const OP: &str = "scaled_dot_product_attention";

/// Deterministic pseudo-random values in about [-2, 2) (no RNG to match anywhere).
fn pseudo(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// `(q, k, v, gy)` for `(B, H, Lq, d)` queries and `(B, Hkv, Lk, d)` keys/values.
fn inputs(
    b: usize,
    h: usize,
    hkv: usize,
    lq: usize,
    lk: usize,
    d: usize,
    seed: u64,
) -> [Tensor; 4] {
    [
        pseudo(&[b, h, lq, d], seed),
        pseudo(&[b, hkv, lk, d], seed + 1),
        pseudo(&[b, hkv, lk, d], seed + 2),
        pseudo(&[b, h, lq, d], seed + 3),
    ]
}

/// The mask with its tensor (if any) converted to `dt` (additive masks follow q's dtype).
fn mask_as(mask: &AttentionMask, dt: DType) -> AttentionMask {
    match mask {
        AttentionMask::Additive(m) => AttentionMask::Additive(m.to_dtype(dt).unwrap()),
        other => other.clone(),
    }
}

/// Output and gradients of our op (inputs as given) against the f64 reference autograd.
fn check_vs_reference(
    what: &str,
    [q, k, v, gy]: &[Tensor; 4],
    mask: &AttentionMask,
    scale: Option<f64>,
    tol: f64,
) -> R<()> {
    let (y, g) = fwd_bwd_n(&[q, k, v], gy, |t| {
        scaled_dot_product_attention(&t[0], &t[1], &t[2], mask, scale, 0.0)
    })?;
    let up = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let m64 = mask_as(mask, DType::F64);
    let (yr, gr) = fwd_bwd_n(&[&up(q), &up(k), &up(v)], &up(gy), |t| {
        sdpa_reference(&t[0], &t[1], &t[2], &m64, scale)
    })?;
    assert_close(&format!("{what} y"), &y, &yr, tol);
    for (name, (a, b)) in ["dq", "dk", "dv"].iter().zip(g.iter().zip(&gr)) {
        assert_close(&format!("{what} {name}"), a, b, tol);
    }
    let finite = |t: &Tensor| {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .all(|x| x.is_finite())
    };
    assert!(
        finite(&y) && g.iter().all(finite),
        "{what}: non-finite values"
    );
    Ok(())
}

/// A 0/1 mask `(b, h, lq, lk)` with some rows fully masked (rows `i % 7 == 3`).
fn bool_mask(dims: [usize; 4], seed: u64) -> Tensor {
    let r = pseudo(&dims, seed)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let (lq, lk) = (dims[2], dims[3]);
    let v: Vec<u8> = r
        .iter()
        .enumerate()
        .map(|(n, x)| {
            let i = (n / lk) % lq;
            u8::from(*x > -0.8 && i % 7 != 3)
        })
        .collect();
    Tensor::from_vec(v, &dims, &Device::Cpu).unwrap()
}

/// A float mask with -inf entries and a fully masked row (row 2 of each slice).
fn additive_mask(dims: [usize; 4], seed: u64) -> Tensor {
    let r = pseudo(&dims, seed)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let (lq, lk) = (dims[2], dims[3]);
    let v: Vec<f32> = r
        .iter()
        .enumerate()
        .map(|(n, x)| {
            let i = (n / lk) % lq;
            if i == 2 || *x < -1.5 {
                f32::NEG_INFINITY
            } else {
                *x
            }
        })
        .collect();
    Tensor::from_vec(v, &dims, &Device::Cpu).unwrap()
}

/// Every mode on shapes (B, H, Lq, Lk, d) with several tiles, odd lengths, GQA.
#[test]
fn every_mask_mode_matches_reference() -> R<()> {
    let (b, h, d) = (2, 4, 16);
    for (lq, lk) in [(37, 53), (150, 203), (130, 130)] {
        let modes: Vec<(String, AttentionMask)> = vec![
            ("none".into(), AttentionMask::None),
            ("causal".into(), AttentionMask::Causal { kv_offset: 0 }),
            ("causal+70".into(), AttentionMask::Causal { kv_offset: 70 }),
            (
                "bool".into(),
                AttentionMask::Bool(bool_mask([b, 1, lq, lk], 11)),
            ),
            (
                "bool (lk)".into(),
                AttentionMask::Bool(bool_mask([1, 1, 1, lk], 12)),
            ),
            (
                "additive".into(),
                AttentionMask::Additive(additive_mask([1, h, lq, lk], 13)),
            ),
            (
                "additive (lq, lk)".into(),
                AttentionMask::Additive(additive_mask([1, 1, lq, lk], 14)),
            ),
            (
                "key padding".into(),
                AttentionMask::KeyPadding(vec![lk, lk / 3]),
            ),
            (
                "key padding 0".into(),
                AttentionMask::KeyPadding(vec![0, 65.min(lk)]),
            ),
            (
                "window 20".into(),
                AttentionMask::SlidingWindow {
                    window: 20,
                    causal: false,
                    global: 0,
                },
            ),
            (
                "causal window 20".into(),
                AttentionMask::SlidingWindow {
                    window: 20,
                    causal: true,
                    global: 0,
                },
            ),
            (
                "causal window 1".into(),
                AttentionMask::SlidingWindow {
                    window: 1,
                    causal: true,
                    global: 0,
                },
            ),
            (
                "window 300".into(),
                AttentionMask::SlidingWindow {
                    window: 300,
                    causal: false,
                    global: 0,
                },
            ),
        ];
        for hkv in [4, 2, 1] {
            let x = inputs(b, h, hkv, lq, lk, d, (lq * 7 + hkv) as u64);
            for (name, mask) in &modes {
                let what = format!("{name} lq={lq} lk={lk} hkv={hkv}");
                check_vs_reference(&what, &x, mask, None, 2e-5)?;
            }
        }
    }
    Ok(())
}

#[test]
fn explicit_scale_and_head_dims() -> R<()> {
    for d in [1, 3, 64, 80] {
        let x = inputs(1, 2, 2, 70, 66, d, d as u64);
        check_vs_reference(&format!("d={d}"), &x, &AttentionMask::None, Some(0.7), 2e-5)?;
        let causal = AttentionMask::Causal { kv_offset: 0 };
        check_vs_reference(&format!("causal d={d}"), &x, &causal, None, 2e-5)?;
    }
    Ok(())
}

/// Rows with nothing to attend give 0 (PyTorch: NaN) and zero gradients, never NaN.
#[test]
fn fully_masked_rows_give_zero() -> R<()> {
    let [q, k, v, gy] = inputs(2, 2, 1, 9, 5, 4, 3);
    let mask = AttentionMask::KeyPadding(vec![5, 0]);
    let (y, g) = fwd_bwd_n(&[&q, &k, &v], &gy, |t| {
        scaled_dot_product_attention(&t[0], &t[1], &t[2], &mask, None, 0.0)
    })?;
    let y1 = y.narrow(0, 1, 1)?;
    assert_eq!(y1.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
    assert_eq!(
        g[0].narrow(0, 1, 1)?.abs()?.max_all()?.to_scalar::<f32>()?,
        0.0
    );
    for t in std::iter::once(&y).chain(&g) {
        let s = t.sum_all()?.to_scalar::<f32>()?;
        assert!(s.is_finite());
    }
    // A causal window shifted past every key: queries of a bool mask row of zeros.
    let mut m = vec![1u8; 9 * 5];
    m[5..10].fill(0);
    let mask = AttentionMask::Bool(Tensor::from_vec(m, (9, 5), &Device::Cpu)?);
    let y = scaled_dot_product_attention(&q, &k, &v, &mask, None, 0.0)?;
    let row = y.narrow(2, 1, 1)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert_eq!(row, 0.0);
    Ok(())
}

/// Causal row 0 is v[0]; the KV-cache offset equals an explicit bottom-right mask.
#[test]
fn causal_alignment() -> R<()> {
    let [q, k, v, _] = inputs(1, 2, 2, 4, 10, 8, 5);
    let y = scaled_dot_product_attention(
        &q,
        &k,
        &v,
        &AttentionMask::Causal { kv_offset: 0 },
        None,
        0.0,
    )?;
    let d0 = (y.narrow(2, 0, 1)? - v.narrow(2, 0, 1)?)?;
    assert!(d0.abs()?.max_all()?.to_scalar::<f32>()? < 1e-6);
    // kv_offset = Lk - Lq: query i sees keys j <= i + 6.
    let cached = AttentionMask::Causal { kv_offset: 6 };
    let y = scaled_dot_product_attention(&q, &k, &v, &cached, None, 0.0)?;
    // Huge offsets and windows mean "no limit", not an overflow.
    let all = scaled_dot_product_attention(&q, &k, &v, &AttentionMask::None, None, 0.0)?;
    for huge in [
        AttentionMask::Causal {
            kv_offset: usize::MAX,
        },
        AttentionMask::SlidingWindow {
            window: usize::MAX,
            causal: false,
            global: 0,
        },
    ] {
        let yh = scaled_dot_product_attention(&q, &k, &v, &huge, None, 0.0)?;
        assert_close("huge offset or window", &yh, &all, 0.0);
    }
    let m: Vec<u8> = (0..4 * 10)
        .map(|n| u8::from(n % 10 <= n / 10 + 6))
        .collect();
    let bool_mask = AttentionMask::Bool(Tensor::from_vec(m, (4, 10), &Device::Cpu)?);
    let yb = scaled_dot_product_attention(&q, &k, &v, &bool_mask, None, 0.0)?;
    assert_close("bottom-right", &y, &yb, 1e-6);
    Ok(())
}

/// Gradients of the f32 kernel against central finite differences.
#[test]
fn gradients_match_finite_differences() -> R<()> {
    let [q, k, v, gy] = inputs(1, 2, 1, 5, 7, 4, 9);
    let (q, k, v) = ((q * 0.5)?, (k * 0.5)?, v);
    for mask in [
        AttentionMask::None,
        AttentionMask::Causal { kv_offset: 1 },
        AttentionMask::SlidingWindow {
            window: 2,
            causal: false,
            global: 0,
        },
    ] {
        let f = |q: &Tensor, k: &Tensor, v: &Tensor| {
            scaled_dot_product_attention(q, k, v, &mask, None, 0.0)
        };
        let (_, g) = fwd_bwd_n(&[&q, &k, &v], &gy, |t| f(&t[0], &t[1], &t[2]))?;
        let fdq = finite_diff(&q, &gy, 1e-2, |x| f(x, &k, &v))?;
        assert_matches_fd("dq", &g[0], &fdq, 2e-2)?;
        let fdk = finite_diff(&k, &gy, 1e-2, |x| f(&q, x, &v))?;
        assert_matches_fd("dk", &g[1], &fdk, 2e-2)?;
        let fdv = finite_diff(&v, &gy, 1e-2, |x| f(&q, &k, x))?;
        assert_matches_fd("dv", &g[2], &fdv, 2e-2)?;
    }
    Ok(())
}

/// f16 / bf16 keep their dtype and match the f32 run on the same rounded values.
#[test]
fn half_precision_matches_f32() -> R<()> {
    let x = inputs(2, 4, 2, 70, 90, 32, 21);
    let masks = [
        AttentionMask::Causal { kv_offset: 0 },
        AttentionMask::Additive(additive_mask([1, 1, 70, 90], 3)),
    ];
    for (dt, tol) in [(DType::F16, 4e-3), (DType::BF16, 3e-2)] {
        let xh: Vec<Tensor> = x.iter().map(|t| t.to_dtype(dt).unwrap()).collect();
        for mask in &masks {
            let mh = mask_as(mask, dt);
            let (y, g) = fwd_bwd_n(&[&xh[0], &xh[1], &xh[2]], &xh[3], |t| {
                scaled_dot_product_attention(&t[0], &t[1], &t[2], &mh, None, 0.0)
            })?;
            assert_eq!(y.dtype(), dt);
            assert!(g.iter().all(|t| t.dtype() == dt));
            let up = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let m32 = mask_as(&mh, DType::F32);
            let (yf, gf) = fwd_bwd_n(&[&up(&xh[0]), &up(&xh[1]), &up(&xh[2])], &up(&xh[3]), |t| {
                scaled_dot_product_attention(&t[0], &t[1], &t[2], &m32, None, 0.0)
            })?;
            assert_close(&format!("{dt:?} y"), &y, &yf, tol);
            for (name, (a, b)) in ["dq", "dk", "dv"].iter().zip(g.iter().zip(&gf)) {
                assert_close(&format!("{dt:?} {name}"), a, b, tol);
            }
        }
    }
    Ok(())
}

/// PyTorch's F.scaled_dot_product_attention (tests/fixtures/gen_attention.py).
#[test]
fn matches_pytorch() -> R<()> {
    let f = fixtures("attention");
    for (case, scale) in [
        ("plain", None),
        ("causal", None),
        ("causal_square", None),
        ("bool", None),
        ("additive", Some(0.3)),
        ("gqa", None),
    ] {
        let t = |w: &str| field(&f, case, w).clone();
        let mask = if case.starts_with("causal") {
            AttentionMask::Causal { kv_offset: 0 }
        } else if let Some(m) = f.get(&format!("{case}.mask_bool")) {
            AttentionMask::Bool(m.clone())
        } else if let Some(m) = f.get(&format!("{case}.mask_add")) {
            AttentionMask::Additive(m.clone())
        } else {
            AttentionMask::None
        };
        let (y, g) = fwd_bwd_n(&[&t("q"), &t("k"), &t("v")], &t("gy"), |x| {
            scaled_dot_product_attention(&x[0], &x[1], &x[2], &mask, scale, 0.0)
        })?;
        assert_close(&format!("{case} y"), &y, &t("y"), 1e-5);
        for (name, got) in ["gq", "gk", "gv"].iter().zip(&g) {
            assert_close(&format!("{case} {name}"), got, &t(name), 1e-5);
        }
    }
    Ok(())
}

#[test]
fn bad_inputs_are_errors() -> R<()> {
    let dev = Device::Cpu;
    let q = Tensor::zeros((2, 4, 5, 8), DType::F32, &dev)?;
    let k = Tensor::zeros((2, 2, 6, 8), DType::F32, &dev)?;
    let none = AttentionMask::None;
    let run = |q: &Tensor, k: &Tensor, v: &Tensor, m: &AttentionMask| {
        scaled_dot_product_attention(q, k, v, m, None, 0.0)
    };
    assert_err_names(run(&q.flatten_to(1)?, &k, &k, &none), OP, "q");
    assert_err_names(
        run(
            &q,
            &k.squeeze(0).unwrap_or(k.clone()).narrow(0, 0, 1)?,
            &k,
            &none,
        ),
        OP,
        "k",
    );
    // Head dim mismatch q/k, and v differing from k.
    let k7 = Tensor::zeros((2, 2, 6, 7), DType::F32, &dev)?;
    assert_err_names(run(&q, &k7, &k7, &none), OP, "d = 8");
    assert_err_names(run(&q, &k, &k7, &none), OP, "v");
    // B mismatch; H not divisible by Hkv.
    let k1 = Tensor::zeros((1, 2, 6, 8), DType::F32, &dev)?;
    assert_err_names(run(&q, &k1, &k1, &none), OP, "B = 2");
    let k3 = Tensor::zeros((2, 3, 6, 8), DType::F32, &dev)?;
    assert_err_names(run(&q, &k3, &k3, &none), OP, "dividing");
    // Zero-sized Lq / Lk.
    let q0 = Tensor::zeros((2, 4, 0, 8), DType::F32, &dev)?;
    assert_err_names(run(&q0, &k, &k, &none), OP, "non-zero");
    let k0 = Tensor::zeros((2, 2, 0, 8), DType::F32, &dev)?;
    assert_err_names(run(&q, &k0, &k0, &none), OP, "non-zero");
    // Dtypes.
    let kh = k.to_dtype(DType::F16)?;
    assert_err_names(run(&q, &kh, &kh, &none), OP, "F16");
    let qi = q.to_dtype(DType::U32)?;
    assert_err_names(run(&qi, &k, &k, &none), OP, "U32");
    let q64 = q.to_dtype(DType::F64)?;
    let k64 = k.to_dtype(DType::F64)?;
    assert_err_names(run(&q64, &k64, &k64, &none), OP, "F64");
    // Masks: shape, dtype, lengths, window.
    let bad = Tensor::zeros((2, 4, 5, 5), DType::U8, &dev)?;
    assert_err_names(run(&q, &k, &k, &AttentionMask::Bool(bad)), OP, "mask");
    let bad = Tensor::zeros((3, 1, 5, 6), DType::U8, &dev)?;
    assert_err_names(run(&q, &k, &k, &AttentionMask::Bool(bad)), OP, "mask");
    let f = Tensor::zeros((5, 6), DType::F32, &dev)?;
    assert_err_names(run(&q, &k, &k, &AttentionMask::Bool(f.clone())), OP, "U8");
    let fh = f.to_dtype(DType::F16)?;
    assert_err_names(
        run(&q, &k, &k, &AttentionMask::Additive(fh)),
        OP,
        "additive mask",
    );
    let f5 = Tensor::zeros((1, 1, 1, 5, 6), DType::F32, &dev)?;
    assert_err_names(run(&q, &k, &k, &AttentionMask::Additive(f5)), OP, "mask");
    assert_err_names(
        run(&q, &k, &k, &AttentionMask::KeyPadding(vec![6])),
        OP,
        "key-padding",
    );
    assert_err_names(
        run(&q, &k, &k, &AttentionMask::KeyPadding(vec![6, 7])),
        OP,
        "key-padding",
    );
    let w0 = AttentionMask::SlidingWindow {
        window: 0,
        causal: true,
        global: 0,
    };
    assert_err_names(run(&q, &k, &k, &w0), OP, "window");
    // Scale and dropout.
    for s in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let r = scaled_dot_product_attention(&q, &k, &k, &none, Some(s), 0.0);
        assert_err_names(r, OP, "scale");
    }
    for p in [-0.1, 1.0, f64::NAN] {
        let r = scaled_dot_product_attention(&q, &k, &k, &none, None, p);
        assert_err_names(r, OP, "dropout_p");
    }
    // The reference rejects the same inputs, naming itself.
    assert_err_names(
        sdpa_reference(&q, &k3, &k3, &none, None),
        "sdpa_reference",
        "dividing",
    );
    Ok(())
}

/// Seeded dropout: forward and gradients equal the reference with the materialised pattern.
#[test]
fn dropout_matches_reference() -> R<()> {
    for (mask, hkv, lq, lk) in [
        (AttentionMask::None, 2, 37, 53),
        (AttentionMask::Causal { kv_offset: 0 }, 1, 150, 130),
        (
            AttentionMask::SlidingWindow {
                window: 9,
                causal: false,
                global: 0,
            },
            4,
            70,
            70,
        ),
    ] {
        let [q, k, v, gy] = inputs(2, 4, hkv, lq, lk, 16, 77);
        let (p, seed) = (0.3, 1234);
        let (y, g) = fwd_bwd_n(&[&q, &k, &v], &gy, |t| {
            scaled_dot_product_attention_seeded(&t[0], &t[1], &t[2], &mask, None, p, seed)
        })?;
        let up = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        let (yr, gr) = fwd_bwd_n(&[&up(&q), &up(&k), &up(&v)], &up(&gy), |t| {
            sdpa_dropout_reference(&t[0], &t[1], &t[2], &mask, None, p, seed)
        })?;
        assert_close("dropout y", &y, &yr, 2e-5);
        for (name, (a, b)) in ["dq", "dk", "dv"].iter().zip(g.iter().zip(&gr)) {
            assert_close(&format!("dropout {name}"), a, b, 2e-5);
        }
        // Same seed, same result; another seed, another pattern.
        let again = scaled_dot_product_attention_seeded(&q, &k, &v, &mask, None, p, seed)?;
        assert_close("same seed", &again, &y, 0.0);
        let other = scaled_dot_product_attention_seeded(&q, &k, &v, &mask, None, p, seed + 1)?;
        assert!(rel_err(&other, &y) > 1e-3);
    }
    Ok(())
}

/// The dropout pattern keeps about 1 - p of the entries, scaled by 1 / (1 - p); p = 0 is the
/// plain op; unseeded calls draw different patterns.
#[test]
fn dropout_pattern_statistics() -> R<()> {
    for p in [0.1, 0.5, 0.9] {
        let keep = attention_dropout_keep((2, 4, 64, 128), p, 7)?;
        let vals = keep.flatten_all()?.to_vec1::<f32>()?;
        let kept = vals.iter().filter(|x| **x > 0.0).count() as f64 / vals.len() as f64;
        assert!((kept - (1.0 - p)).abs() < 0.01, "p={p}: kept {kept}");
        let inv = (1.0 / (1.0 - p)) as f32;
        assert!(vals.iter().all(|x| *x == 0.0 || (*x - inv).abs() < 1e-6));
        // No visible structure: rows and columns keep about the same fraction.
        let col0 = keep.narrow(3, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
        let kc = col0.iter().filter(|x| **x > 0.0).count() as f64 / col0.len() as f64;
        assert!((kc - (1.0 - p)).abs() < 0.08, "p={p}: column 0 kept {kc}");
    }
    let [q, k, v, _] = inputs(1, 2, 2, 20, 30, 8, 5);
    let none = AttentionMask::None;
    let plain = scaled_dot_product_attention(&q, &k, &v, &none, None, 0.0)?;
    let p0 = scaled_dot_product_attention_seeded(&q, &k, &v, &none, None, 0.0, 99)?;
    assert_close("p = 0", &p0, &plain, 0.0);
    let a = scaled_dot_product_attention(&q, &k, &v, &none, None, 0.5)?;
    let b = scaled_dot_product_attention(&q, &k, &v, &none, None, 0.5)?;
    assert!(
        rel_err(&a, &b) > 1e-3,
        "unseeded calls drew the same pattern"
    );
    Ok(())
}

/// The Longformer pattern of `SlidingWindow { window, causal, global }` as an explicit
/// `(Lq, Lk)` boolean mask, straight from its documented semantics.
fn longformer_bool(lq: usize, lk: usize, window: usize, causal: bool, global: usize) -> Tensor {
    let m: Vec<u8> = (0..lq * lk)
        .map(|n| {
            let (i, j) = (n / lk, n % lk);
            let band = if causal {
                j <= i && i - j < window
            } else {
                i.abs_diff(j) < window
            };
            u8::from((band || j < global || i < global) && (!causal || j <= i))
        })
        .collect();
    Tensor::from_vec(m, (lq, lk), &Device::Cpu).unwrap()
}

/// Global tokens as a mask mode of the kernel: forward and q/k/v gradients equal the f64
/// reference with the equivalent explicit boolean mask (tiles not dividing the lengths, causal
/// or not, GQA, globals inside the first tile or spanning tiles, skipped and full tiles).
#[test]
fn sliding_window_global_matches_bool_reference() -> R<()> {
    let (b, h, d) = (2, 4, 16);
    let up = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    for (lq, lk, hkvs) in [
        (150, 150, &[4, 1][..]),
        (130, 130, &[2][..]),
        (37, 53, &[2][..]),
        (300, 300, &[1][..]),
    ] {
        for global in [1, 5, 70] {
            for causal in [false, true] {
                for window in [20, 1] {
                    let sw = AttentionMask::SlidingWindow {
                        window,
                        causal,
                        global,
                    };
                    let bm = AttentionMask::Bool(longformer_bool(lq, lk, window, causal, global));
                    for &hkv in hkvs {
                        let what = format!(
                            "window {window} causal={causal} global={global} lq={lq} lk={lk} \
                             hkv={hkv}"
                        );
                        let x = inputs(b, h, hkv, lq, lk, d, (lq + global + hkv) as u64);
                        let [q, k, v, gy] = &x;
                        let (y, g) = fwd_bwd_n(&[q, k, v], gy, |t| {
                            scaled_dot_product_attention(&t[0], &t[1], &t[2], &sw, None, 0.0)
                        })?;
                        let (yr, gr) = fwd_bwd_n(&[&up(q), &up(k), &up(v)], &up(gy), |t| {
                            sdpa_reference(&t[0], &t[1], &t[2], &bm, None)
                        })?;
                        assert_close(&format!("{what} y"), &y, &yr, 2e-5);
                        for (name, (a, r)) in ["dq", "dk", "dv"].iter().zip(g.iter().zip(&gr)) {
                            assert_close(&format!("{what} {name}"), a, r, 2e-5);
                        }
                        // The reference's own SlidingWindow path agrees too.
                        let ys = sdpa_reference(&up(q), &up(k), &up(v), &sw, None)?;
                        assert_close(&format!("{what} reference"), &ys, &yr, 1e-12);
                    }
                }
            }
        }
    }
    Ok(())
}
