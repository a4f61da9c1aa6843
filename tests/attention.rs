//! Attention blocks: MultiHeadAttention against torch `nn.MultiheadAttention(batch_first=True)`
//! (forward and gradients, kdim/vdim ≠ E, key padding and causal masks), KV-cache decoding,
//! positional encodings, local, axial and Linformer attention; bad inputs.

mod common;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::attention::*;
use candle_tricks::ops::{sdpa_reference, AttentionMask};
use common::*;

const MHA: &str = "MultiHeadAttention";

/// A block built by `build` on a fresh VarMap whose variables are then overwritten by the
/// fixture tensors `<case>.<name>` (which checks that the names and shapes are PyTorch's).
fn load<T>(
    f: &Fixtures,
    case: &str,
    build: impl FnOnce(VarBuilder) -> candle_tricks::Result<T>,
) -> (T, VarMap) {
    let mut vm = VarMap::new();
    let block = build(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
    for n in names {
        vm.set_one(&n, field(f, case, &n)).unwrap();
    }
    (block, vm)
}

fn var(vm: &VarMap, name: &str) -> Var {
    vm.data().lock().unwrap()[name].clone()
}

/// u8 mask (B, 1, 1, Lk) from lengths: 1 = attend.
fn padding_mask(lengths: &[usize], lk: usize) -> Tensor {
    let v: Vec<u8> = lengths
        .iter()
        .flat_map(|&n| (0..lk).map(move |j| u8::from(j < n)))
        .collect();
    Tensor::from_vec(v, (lengths.len(), 1, 1, lk), &Device::Cpu).unwrap()
}

#[test]
fn mha_self_attention_matches_torch() -> R<()> {
    let f = fixtures("mha");
    let (mha, vm) = load(&f, "self", |vb| {
        multi_head_attention(8, MhaConfig::new(2), vb)
    });
    let x = Var::from_tensor(field(&f, "self", "x"))?;
    // Causal ∧ key padding as one boolean mask (B, 1, L, L).
    let causal = Tensor::tril2(5, DType::U8, &Device::Cpu)?;
    let mask = padding_mask(&[5, 3], 5).broadcast_mul(&causal)?;
    let y = mha.forward_t(&x, &x, &x, &AttentionMask::Bool(mask), false)?;
    assert_close("y", &y, field(&f, "self", "y"), 1e-5);
    let grads = (y * field(&f, "self", "gy"))?.sum_all()?.backward()?;
    assert_close("gx", grads.get(&x).unwrap(), field(&f, "self", "gx"), 1e-5);
    let w = var(&vm, "in_proj_weight");
    let gw = grads.get(&w).unwrap();
    assert_close(
        "g in_proj_weight",
        gw,
        field(&f, "self", "g_in_proj_weight"),
        1e-5,
    );
    Ok(())
}

#[test]
fn mha_cross_attention_kdim_vdim_matches_torch() -> R<()> {
    let f = fixtures("mha");
    let cfg = MhaConfig::new(2).with_kdim(Some(6)).with_vdim(Some(4));
    let (mha, vm) = load(&f, "cross", |vb| multi_head_attention(8, cfg, vb));
    let q = Var::from_tensor(field(&f, "cross", "q"))?;
    let k = Var::from_tensor(field(&f, "cross", "k"))?;
    let v = Var::from_tensor(field(&f, "cross", "v"))?;
    let y = mha.forward_t(&q, &k, &v, &AttentionMask::KeyPadding(vec![5, 4]), false)?;
    assert_close("y", &y, field(&f, "cross", "y"), 1e-5);
    let grads = (y * field(&f, "cross", "gy"))?.sum_all()?.backward()?;
    for (n, t) in [("gq", &q), ("gk", &k), ("gv", &v)] {
        assert_close(n, grads.get(t).unwrap(), field(&f, "cross", n), 1e-5);
    }
    for n in ["q_proj_weight", "k_proj_weight"] {
        let g = grads.get(&var(&vm, n)).unwrap();
        assert_close(n, g, field(&f, "cross", &format!("g_{n}")), 1e-5);
    }
    Ok(())
}

fn fresh_mha(e: usize, cfg: MhaConfig) -> MultiHeadAttention {
    let vm = VarMap::new();
    multi_head_attention(
        e,
        cfg,
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
    )
    .unwrap()
}

#[test]
fn kv_cache_decoding_equals_full_causal_pass() -> R<()> {
    for cfg in [
        MhaConfig::new(4),
        MhaConfig::new(4).with_num_kv_heads(Some(1)),
    ] {
        let mha = fresh_mha(16, cfg);
        let x = Tensor::randn(0f32, 1., (2, 9, 16), &Device::Cpu)?;
        let full = mha.forward_t(&x, &x, &x, &AttentionMask::Causal { kv_offset: 0 }, false)?;
        // Prefill 4 tokens, then chunks of 1, 3, 1.
        let mut cache = KvCache::new();
        let mut parts = Vec::new();
        let mut t = 0;
        for n in [4, 1, 3, 1] {
            parts.push(mha.forward_cached(&x.narrow(1, t, n)?, &mut cache, true)?);
            t += n;
        }
        assert_eq!(cache.len(), 9);
        let inc = Tensor::cat(&parts, 1)?;
        assert_close("cached", &inc, &full, 1e-5);
        // Non-causal with the whole sequence at once = unmasked self-attention.
        let mut c2 = KvCache::new();
        let a = mha.forward_cached(&x, &mut c2, false)?;
        assert_close("non-causal", &a, &mha.forward(&x)?, 1e-6);
        // A cache of another batch size is rejected.
        let r = mha.forward_cached(&x.narrow(0, 0, 1)?, &mut cache, true);
        assert_err_names(r, MHA, "batch size");
    }
    Ok(())
}

#[test]
fn gqa_matches_repeated_kv_heads() -> R<()> {
    // GQA with 2 kv heads = MHA with 4 heads whose k/v rows repeat each kv head twice.
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let _ = multi_head_attention(16, MhaConfig::new(4).with_num_kv_heads(Some(2)), vb.clone())?;
    let data = vm.data().lock().unwrap();
    let get = |n: &str| data[n].as_tensor().clone();
    let rep = |w: &Tensor| -> Tensor {
        // (2·4, in) → (4·4, in): kv head j serves query heads 2j, 2j+1.
        let (_, i) = w.dims2().unwrap();
        w.reshape((2, 1, 4, i))
            .unwrap()
            .repeat((1, 2, 1, 1))
            .unwrap()
            .reshape((16, i))
            .unwrap()
    };
    let b = get("in_proj_bias");
    let (bq, bk, bv) = (
        b.narrow(0, 0, 16)?,
        b.narrow(0, 16, 8)?,
        b.narrow(0, 24, 8)?,
    );
    let rep_b = |t: &Tensor| rep(&t.unsqueeze(1).unwrap()).squeeze(1).unwrap();
    let gqa = MultiHeadAttention::new(
        16,
        MhaWeights {
            in_proj_weight: None,
            q_proj_weight: Some(get("q_proj_weight")),
            k_proj_weight: Some(get("k_proj_weight")),
            v_proj_weight: Some(get("v_proj_weight")),
            in_proj_bias: Some(b.clone()),
            out_proj_weight: get("out_proj.weight"),
            out_proj_bias: Some(get("out_proj.bias")),
        },
        MhaConfig::new(4).with_num_kv_heads(Some(2)),
    )?;
    let full = MultiHeadAttention::new(
        16,
        MhaWeights {
            in_proj_weight: Some(Tensor::cat(
                &[
                    get("q_proj_weight"),
                    rep(&get("k_proj_weight")),
                    rep(&get("v_proj_weight")),
                ],
                0,
            )?),
            q_proj_weight: None,
            k_proj_weight: None,
            v_proj_weight: None,
            in_proj_bias: Some(Tensor::cat(&[bq, rep_b(&bk), rep_b(&bv)], 0)?),
            out_proj_weight: get("out_proj.weight"),
            out_proj_bias: Some(get("out_proj.bias")),
        },
        MhaConfig::new(4),
    )?;
    let x = Tensor::randn(0f32, 1., (2, 6, 16), &dev)?;
    assert_close("gqa", &gqa.forward(&x)?, &full.forward(&x)?, 1e-5);
    assert_eq!(gqa.num_kv_heads(), 2);
    assert_eq!(gqa.head_dim(), 4);
    Ok(())
}

#[test]
fn mha_dropout_only_in_training() -> R<()> {
    let mha = fresh_mha(8, MhaConfig::new(2).with_dropout(0.5));
    let x = Tensor::randn(0f32, 1., (1, 6, 8), &Device::Cpu)?;
    let m = AttentionMask::None;
    let a = mha.forward_t(&x, &x, &x, &m, false)?;
    assert_close("eval", &a, &mha.forward(&x)?, 0.0);
    let t = mha.forward_t(&x, &x, &x, &m, true)?;
    assert!(rel_err(&t, &a) > 1e-3);
    Ok(())
}

#[test]
fn mha_bad_inputs() -> R<()> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    assert_err_names(
        multi_head_attention(10, MhaConfig::new(4), vb.clone()),
        MHA,
        "divisible",
    );
    assert_err_names(
        multi_head_attention(8, MhaConfig::new(0), vb.clone()),
        MHA,
        "num_heads",
    );
    let cfg = MhaConfig::new(4).with_num_kv_heads(Some(3));
    assert_err_names(
        multi_head_attention(8, cfg, vb.clone()),
        MHA,
        "num_kv_heads",
    );
    let cfg = MhaConfig::new(2).with_dropout(1.0);
    assert_err_names(multi_head_attention(8, cfg, vb.clone()), MHA, "dropout");
    let cfg = MhaConfig::new(2).with_kdim(Some(0));
    assert_err_names(multi_head_attention(8, cfg, vb.clone()), MHA, "kdim");

    let mha = fresh_mha(8, MhaConfig::new(2));
    let x = Tensor::zeros((2, 5, 8), DType::F32, &dev)?;
    let none = AttentionMask::None;
    let bad_e = Tensor::zeros((2, 5, 6), DType::F32, &dev)?;
    assert_err_names(mha.forward_t(&bad_e, &x, &x, &none, false), MHA, "query");
    assert_err_names(mha.forward_t(&x, &bad_e, &x, &none, false), MHA, "key");
    let rank2 = Tensor::zeros((5, 8), DType::F32, &dev)?;
    assert_err_names(mha.forward_t(&rank2, &x, &x, &none, false), MHA, "query");
    let empty = Tensor::zeros((2, 0, 8), DType::F32, &dev)?;
    assert_err_names(mha.forward_t(&empty, &x, &x, &none, false), MHA, "query");
    let other_b = Tensor::zeros((3, 5, 8), DType::F32, &dev)?;
    assert_err_names(mha.forward_t(&x, &other_b, &x, &none, false), MHA, "value");
    let short = Tensor::zeros((2, 4, 8), DType::F32, &dev)?;
    assert_err_names(mha.forward_t(&x, &x, &short, &none, false), MHA, "value");
    let f64x = x.to_dtype(DType::F64)?;
    assert_err_names(mha.forward_t(&f64x, &x, &x, &none, false), MHA, "query");
    assert!(mha.forward(&bad_e).is_err());
    // Cross-attention weights cannot do self-attention through forward / forward_cached.
    let cross = fresh_mha(8, MhaConfig::new(2).with_kdim(Some(6)));
    assert_err_names(
        cross.forward_cached(&x, &mut KvCache::new(), true),
        MHA,
        "kdim",
    );
    // Missing / wrong tensors in `new`.
    let w = MhaWeights {
        in_proj_weight: None,
        q_proj_weight: None,
        k_proj_weight: None,
        v_proj_weight: None,
        in_proj_bias: None,
        out_proj_weight: Tensor::zeros((8, 8), DType::F32, &dev)?,
        out_proj_bias: None,
    };
    let cfg = MhaConfig::new(2).with_bias(false);
    assert_err_names(
        MultiHeadAttention::new(8, w.clone(), cfg),
        MHA,
        "in_proj_weight",
    );
    let w2 = MhaWeights {
        in_proj_weight: Some(Tensor::zeros((8, 8), DType::F32, &dev)?),
        ..w
    };
    assert_err_names(MultiHeadAttention::new(8, w2, cfg), MHA, "in_proj_weight");
    Ok(())
}

#[test]
fn sinusoidal_hand_values() -> R<()> {
    let pe = SinusoidalPositionalEncoding::new(10, 6, DType::F32, &Device::Cpu)?;
    let t = pe.table().to_vec2::<f32>()?;
    assert_eq!(t[0], vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
    let w1 = 1.0 / 10000f64.powf(2.0 / 6.0);
    let w2 = 1.0 / 10000f64.powf(4.0 / 6.0);
    let want = [
        3f64.sin(),
        3f64.cos(),
        (3.0 * w1).sin(),
        (3.0 * w1).cos(),
        (3.0 * w2).sin(),
    ];
    for (c, w) in want.iter().enumerate() {
        assert!((t[3][c] as f64 - w).abs() < 1e-6, "col {c}");
    }
    let x = Tensor::ones((2, 4, 6), DType::F32, &Device::Cpu)?;
    let y = pe.forward_at(&x, 3)?;
    let row = y.get(1)?.get(0)?.to_vec1::<f32>()?;
    assert!((row[0] as f64 - (1.0 + 3f64.sin())).abs() < 1e-6);
    assert_close(
        "forward",
        &pe.forward(&x)?,
        &(x.broadcast_add(&pe.table().narrow(0, 0, 4)?))?,
        0.0,
    );
    let blk = "SinusoidalPositionalEncoding";
    assert_err_names(pe.forward_at(&x, 7), blk, "max_len");
    assert_err_names(
        pe.forward_at(&Tensor::ones((2, 4, 5), DType::F32, &Device::Cpu)?, 0),
        blk,
        "input",
    );
    assert_err_names(
        SinusoidalPositionalEncoding::new(0, 6, DType::F32, &Device::Cpu),
        blk,
        "max_len",
    );
    Ok(())
}

#[test]
fn learned_embedding_adds_rows_and_rejects_long_inputs() -> R<()> {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let emb = learned_positional_embedding(5, 4, vb)?;
    assert_eq!(vm.data().lock().unwrap()["weight"].dims(), &[5, 4]);
    let x = Tensor::zeros((2, 3, 4), DType::F32, &Device::Cpu)?;
    let y = emb.forward(&x)?;
    assert_close("rows", &y.get(1)?, &emb.weight().narrow(0, 0, 3)?, 0.0);
    assert_close(
        "offset",
        &emb.forward_at(&x, 2)?.get(0)?,
        &emb.weight().narrow(0, 2, 3)?,
        0.0,
    );
    let long = Tensor::zeros((1, 6, 4), DType::F32, &Device::Cpu)?;
    assert_err_names(
        emb.forward_at(&long, 0),
        "LearnedPositionalEmbedding",
        "max_len",
    );
    let w = Tensor::zeros(5, DType::F32, &Device::Cpu)?;
    assert_err_names(
        LearnedPositionalEmbedding::new(w),
        "LearnedPositionalEmbedding",
        "weight",
    );
    Ok(())
}

#[test]
fn rope_matches_torch_formula_and_has_gradients() -> R<()> {
    let f = fixtures("mha");
    let rope = RotaryEmbedding::new(8, 16, 10000.0, DType::F32, &Device::Cpu)?;
    let q = Var::from_tensor(get(&f, "rope.q"))?;
    let (rq, rk) = rope.apply(&q, &q.narrow(2, 0, 2)?, 3)?;
    assert_close("rope", &rq, get(&f, "rope.y"), 1e-6);
    assert_close("rope k", &rk, &get(&f, "rope.y").narrow(2, 0, 2)?, 1e-6);
    // A rotation: the norm is kept, and the gradient of sum(rq²)/2 is q itself.
    let g = (rq.sqr()?.sum_all()? * 0.5)?.backward()?;
    assert_close("grad", g.get(&q).unwrap(), &q, 1e-5);
    assert_err_names(rope.apply(&q, &q, 13), "RotaryEmbedding", "max_len");
    assert_err_names(
        RotaryEmbedding::new(7, 16, 10000.0, DType::F32, &Device::Cpu),
        "RotaryEmbedding",
        "even",
    );
    assert_err_names(
        RotaryEmbedding::new(8, 16, 1.0, DType::F32, &Device::Cpu),
        "RotaryEmbedding",
        "base",
    );
    Ok(())
}

#[test]
fn local_attention_band_and_global_tokens() -> R<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (2, 11, 8), &dev)?;
    for causal in [false, true] {
        for g in [0, 2] {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
            let cfg = LocalAttentionConfig::new(MhaConfig::new(2), 3)
                .with_causal(causal)
                .with_n_global(g);
            let att = local_attention(8, cfg, vb)?;
            // Hand-built mask, then plain MHA.
            let mut m = vec![0u8; 121];
            for i in 0..11usize {
                for j in 0..11usize {
                    let band = if causal {
                        j <= i && i - j < 3
                    } else {
                        i.abs_diff(j) < 3
                    };
                    m[i * 11 + j] = u8::from((band || i < g || j < g) && (!causal || j <= i));
                }
            }
            let mask = AttentionMask::Bool(Tensor::from_vec(m, (11, 11), &dev)?);
            let want = att.mha().forward_t(&x, &x, &x, &mask, false)?;
            assert_close("local", &att.forward(&x)?, &want, 1e-6);
            if g > 0 && !causal {
                // A global token attends everything: its row equals full attention's.
                let full = att.mha().forward(&x)?;
                assert_close(
                    "global row",
                    &att.forward(&x)?.narrow(1, 0, g)?,
                    &full.narrow(1, 0, g)?,
                    1e-6,
                );
            }
        }
    }
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let r = local_attention(8, LocalAttentionConfig::new(MhaConfig::new(2), 0), vb);
    assert_err_names(r, "LocalAttention", "window");
    Ok(())
}

#[test]
fn axial_equals_explicit_row_then_column_attention() -> R<()> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let att = axial_attention(
        8,
        MhaConfig::new(2),
        VarBuilder::from_varmap(&vm, DType::F32, &dev),
    )?;
    {
        let data = vm.data().lock().unwrap();
        assert!(data.contains_key("row.in_proj_weight") && data.contains_key("col.out_proj.bias"));
    }
    let (b, c, h, w) = (2, 8, 3, 4);
    let x = Tensor::randn(0f32, 1., (b, c, h, w), &dev)?;
    let y = att.forward(&x)?;
    assert_eq!(y.dims(), &[b, c, h, w]);
    // Explicit: per (b, row) MHA over the W positions, then per (b, column) over the H ones.
    let mut rows = vec![];
    for bi in 0..b {
        for hi in 0..h {
            let seq = x.get(bi)?.narrow(1, hi, 1)?.squeeze(1)?.t()?.unsqueeze(0)?; // (1, W, C)
            rows.push(att.row().forward(&seq)?.squeeze(0)?.t()?); // (C, W)
        }
    }
    // r[bi][:, hi, :] = rows[bi*h + hi]
    let r = Tensor::stack(&rows, 1)?
        .reshape((c, b, h, w))?
        .permute((1, 0, 2, 3))?;
    let mut out = vec![];
    for bi in 0..b {
        let mut cols = vec![];
        for wi in 0..w {
            let seq = r.get(bi)?.narrow(2, wi, 1)?.squeeze(2)?.t()?.unsqueeze(0)?; // (1, H, C)
            cols.push(att.col().forward(&seq)?.squeeze(0)?.t()?); // (C, H)
        }
        out.push(Tensor::stack(&cols, 2)?); // (C, H, W)
    }
    let want = Tensor::stack(&out, 0)?;
    assert_close("axial", &y, &want, 1e-5);
    let bad = Tensor::zeros((2, 6, 3, 4), DType::F32, &dev)?;
    assert_err_names(att.forward_t(&bad, false), "AxialAttention", "input");
    let bad = Tensor::zeros((2, 8, 3), DType::F32, &dev)?;
    assert_err_names(att.forward_t(&bad, false), "AxialAttention", "input");
    Ok(())
}

#[test]
fn linformer_equals_hand_composition() -> R<()> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let cfg = LinformerConfig::new(MhaConfig::new(2), 3, 10);
    let att = linformer_attention(8, cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
    let t = |n: &str| vm.data().lock().unwrap()[n].as_tensor().clone();
    let (wi, bi, wo, bo) = (
        t("in_proj_weight"),
        t("in_proj_bias"),
        t("out_proj.weight"),
        t("out_proj.bias"),
    );
    assert_eq!(t("proj_k").dims(), &[3, 10]);
    let x = Tensor::randn(0f32, 1., (2, 7, 8), &dev)?;
    let lin = |i: usize| -> Tensor {
        x.broadcast_matmul(&wi.narrow(0, 8 * i, 8).unwrap().t().unwrap())
            .unwrap()
            .broadcast_add(&bi.narrow(0, 8 * i, 8).unwrap())
            .unwrap()
    };
    // (B, L, E) → sequence projection (k, L) · (B, L, E) → (B, k, E), then heads.
    let heads = |z: Tensor| {
        z.reshape((2, z.dim(1).unwrap(), 2, 4))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
    };
    let q = heads(lin(0));
    let k = heads(t("proj_k").narrow(1, 0, 7)?.broadcast_matmul(&lin(1))?);
    let v = heads(t("proj_v").narrow(1, 0, 7)?.broadcast_matmul(&lin(2))?);
    let o = sdpa_reference(
        &q.contiguous()?,
        &k.contiguous()?,
        &v.contiguous()?,
        &AttentionMask::None,
        None,
    )?;
    let o = o.transpose(1, 2)?.reshape((2, 7, 8))?;
    let want = o.broadcast_matmul(&wo.t()?)?.broadcast_add(&bo)?;
    assert_close("linformer", &att.forward(&x)?, &want, 1e-5);
    let long = Tensor::zeros((1, 11, 8), DType::F32, &dev)?;
    assert_err_names(att.forward_t(&long, false), "LinformerAttention", "max_len");
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let r = linformer_attention(8, LinformerConfig::new(MhaConfig::new(2), 0, 10), vb);
    assert_err_names(r, "LinformerAttention", "k");
    Ok(())
}

#[test]
fn mha_f16_close_to_f32() -> R<()> {
    let f = fixtures("mha");
    let (mha, _vm) = load(&f, "self", |vb| {
        multi_head_attention(8, MhaConfig::new(2), vb)
    });
    let ts = [
        "in_proj_weight",
        "in_proj_bias",
        "out_proj.weight",
        "out_proj.bias",
    ]
    .map(|n| (n.to_string(), field(&f, "self", n).clone()))
    .into_iter()
    .collect();
    let vb16 = VarBuilder::from_tensors(ts, DType::F16, &Device::Cpu);
    let mha16 = multi_head_attention(8, MhaConfig::new(2), vb16)?;
    let x = field(&f, "self", "x");
    let m = AttentionMask::Causal { kv_offset: 0 };
    let y = mha.forward_t(x, x, x, &m, false)?;
    let x16 = x.to_dtype(DType::F16)?;
    let y16 = mha16.forward_t(&x16, &x16, &x16, &m, false)?;
    assert_eq!(y16.dtype(), DType::F16);
    assert_close("f16", &y16.to_dtype(DType::F32)?, &y, 1e-2);
    // Mixed dtypes are rejected.
    assert_err_names(mha.forward_t(&x16, x, x, &m, false), MHA, "query");
    Ok(())
}
