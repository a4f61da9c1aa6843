//! Bad input for the `attention` family.

use super::*;

pub(super) fn attention_cases() -> Vec<Case> {
    let mut c = Cases::new("attention");
    let mha = "MultiHeadAttention";
    let mc = MhaConfig::new;
    c.err("mha: 0 heads", mha, move || {
        multi_head_attention(8, mc(0), vb())?;
        Ok(())
    });
    c.err("mha: embed not divisible by heads", mha, move || {
        multi_head_attention(8, mc(3), vb())?;
        Ok(())
    });
    c.err("mha: kv heads not dividing heads", mha, move || {
        let cfg = MhaConfig {
            num_kv_heads: Some(3),
            ..mc(4)
        };
        multi_head_attention(8, cfg, vb())?;
        Ok(())
    });
    c.err("mha: dropout 1.5", mha, move || {
        let cfg = MhaConfig {
            dropout: 1.5,
            ..mc(2)
        };
        multi_head_attention(8, cfg, vb())?;
        Ok(())
    });
    c.err("mha: dropout NaN", mha, move || {
        let cfg = MhaConfig {
            dropout: f64::NAN,
            ..mc(2)
        };
        multi_head_attention(8, cfg, vb())?;
        Ok(())
    });
    c.err("mha: kdim 0", mha, move || {
        let cfg = MhaConfig {
            kdim: Some(0),
            ..mc(2)
        };
        multi_head_attention(8, cfg, vb())?;
        Ok(())
    });
    c.err("mha: embed 0", mha, move || {
        multi_head_attention(0, mc(1), vb())?;
        Ok(())
    });
    c.err("MHA forward: wrong embed dim", mha, move || {
        let m = multi_head_attention(8, mc(2), vb())?;
        m.forward(&t((1, 3, 6)))?;
        Ok(())
    });
    c.err("MHA forward: rank 2", mha, move || {
        let m = multi_head_attention(8, mc(2), vb())?;
        m.forward(&t((3, 8)))?;
        Ok(())
    });
    c.err(
        "MHA forward_t: key and value lengths differ",
        mha,
        move || {
            let m = multi_head_attention(8, mc(2), vb())?;
            let q = t((1, 3, 8));
            m.forward_t(
                &q,
                &t((1, 4, 8)),
                &t((1, 5, 8)),
                &AttentionMask::None,
                false,
            )?;
            Ok(())
        },
    );
    c.err("MHA forward_t: f16 key", mha, move || {
        let m = multi_head_attention(8, mc(2), vb())?;
        let q = t((1, 3, 8));
        let k = td((1, 3, 8), DType::F16);
        m.forward_t(&q, &k, &k, &AttentionMask::None, false)?;
        Ok(())
    });
    c.err(
        "MHA forward_cached: batch changes between calls",
        mha,
        move || {
            let m = multi_head_attention(8, mc(2), vb())?;
            let mut cache = KvCache::new();
            m.forward_cached(&t((1, 2, 8)), &mut cache, true)?;
            m.forward_cached(&t((2, 1, 8)), &mut cache, true)?;
            Ok(())
        },
    );
    c.err("MHA forward_cached: wrong embed dim", mha, move || {
        let m = multi_head_attention(8, mc(2), vb())?;
        m.forward_cached(&t((1, 2, 6)), &mut KvCache::new(), true)?;
        Ok(())
    });
    c.err(
        "MHA forward_cached: cache filled by a different model",
        mha,
        move || {
            let m = multi_head_attention(8, mc(2), vb())?;
            let other = multi_head_attention(12, mc(3), vb())?;
            let mut cache = KvCache::new();
            other.forward_cached(&t((1, 2, 12)), &mut cache, true)?;
            m.forward_cached(&t((1, 1, 8)), &mut cache, true)?;
            Ok(())
        },
    );
    c.val(
        "MHA forward_cached: token by token == full causal",
        move || {
            let m = multi_head_attention(8, mc(2), vb())?;
            let x = noncontig((1, 4, 8));
            let full = m.forward_t(&x, &x, &x, &AttentionMask::Causal { kv_offset: 0 }, false)?;
            let mut cache = KvCache::new();
            let mut outs = Vec::new();
            for i in 0..4 {
                outs.push(m.forward_cached(&x.narrow(1, i, 1)?, &mut cache, true)?);
            }
            close("y", &Tensor::cat(&outs, 1)?, &full, 1e-5)
        },
    );

    let sin = "SinusoidalPositionalEncoding";
    c.err("sinusoidal: max_len 0", sin, || {
        SinusoidalPositionalEncoding::new(0, 8, DType::F32, &cpu())?;
        Ok(())
    });
    c.err("sinusoidal: dtype u32", sin, || {
        SinusoidalPositionalEncoding::new(4, 8, DType::U32, &cpu())?;
        Ok(())
    });
    c.err(
        "sinusoidal forward: sequence longer than max_len",
        sin,
        || {
            let p = SinusoidalPositionalEncoding::new(4, 8, DType::F32, &cpu())?;
            p.forward(&t((1, 5, 8)))?;
            Ok(())
        },
    );
    c.err("sinusoidal forward_at: offset past max_len", sin, || {
        let p = SinusoidalPositionalEncoding::new(4, 8, DType::F32, &cpu())?;
        p.forward_at(&t((1, 2, 8)), 3)?;
        Ok(())
    });
    c.err("sinusoidal forward: wrong dim", sin, || {
        let p = SinusoidalPositionalEncoding::new(4, 8, DType::F32, &cpu())?;
        p.forward(&t((1, 2, 6)))?;
        Ok(())
    });
    let lp = "LearnedPositionalEmbedding";
    c.err("learned: weight rank 1", lp, || {
        LearnedPositionalEmbedding::new(t(8))?;
        Ok(())
    });
    c.err("learned forward: too long", lp, || {
        LearnedPositionalEmbedding::new(t((4, 8)))?.forward(&t((1, 5, 8)))?;
        Ok(())
    });
    let rope = "RotaryEmbedding";
    c.err("rope: odd head_dim", rope, || {
        RotaryEmbedding::new(7, 16, 10_000.0, DType::F32, &cpu())?;
        Ok(())
    });
    for (name, base) in [("NaN", f64::NAN), ("0", 0.0), ("-1", -1.0), ("1", 1.0)] {
        c.err(&format!("rope: base (theta) {name}"), rope, move || {
            RotaryEmbedding::new(8, 16, base, DType::F32, &cpu())?;
            Ok(())
        });
    }
    c.err("rope rotate: offset past max_len", rope, || {
        let r = RotaryEmbedding::new(8, 4, 10_000.0, DType::F32, &cpu())?;
        r.rotate(&t((1, 2, 3, 8)), 2)?;
        Ok(())
    });
    c.err("rope apply: q and k head dims differ", rope, || {
        let r = RotaryEmbedding::new(8, 16, 10_000.0, DType::F32, &cpu())?;
        r.apply(&t((1, 2, 3, 8)), &t((1, 2, 3, 6)), 0)?;
        Ok(())
    });
    c.err("rope rotate: f16 input, f32 table", rope, || {
        let r = RotaryEmbedding::new(8, 16, 10_000.0, DType::F32, &cpu())?;
        r.rotate(&td((1, 2, 3, 8), DType::F16), 0)?;
        Ok(())
    });
    c.val("rope rotate: non-contiguous == contiguous", || {
        let r = RotaryEmbedding::new(8, 16, 10_000.0, DType::F32, &cpu())?;
        let x = t((1, 3, 2, 8)).transpose(1, 2)?;
        close("y", &r.rotate(&x, 1)?, &r.rotate(&x.contiguous()?, 1)?, 0.0)
    });

    let la = "LocalAttention";
    c.err("local_attention: window 0", la, || {
        local_attention(8, LocalAttentionConfig::new(MhaConfig::new(2), 0), vb())?;
        Ok(())
    });
    // Names the inner attention that checks the input.
    c.err("LocalAttention forward: wrong dim", mha, || {
        let l = local_attention(8, LocalAttentionConfig::new(MhaConfig::new(2), 2), vb())?;
        l.forward(&t((1, 4, 6)))?;
        Ok(())
    });
    let ax = "AxialAttention";
    c.err("AxialAttention forward: rank 3", ax, || {
        axial_attention(4, MhaConfig::new(2), vb())?.forward(&t((4, 3, 3)))?;
        Ok(())
    });
    c.err("AxialAttention forward: wrong channels", ax, || {
        axial_attention(4, MhaConfig::new(2), vb())?.forward(&t((1, 6, 3, 3)))?;
        Ok(())
    });
    c.val(
        "AxialAttention forward: 1x1 map, non-contiguous == contiguous",
        || {
            let a = axial_attention(4, MhaConfig::new(2), vb())?;
            let x = t((1, 1, 2, 4)).permute((2, 3, 0, 1))?; // (2, 4, 1, 1)
            close("y", &a.forward(&x)?, &a.forward(&x.contiguous()?)?, 1e-6)
        },
    );
    let lf = "LinformerAttention";
    c.err("linformer: k 0", lf, || {
        linformer_attention(8, LinformerConfig::new(MhaConfig::new(2), 0, 16), vb())?;
        Ok(())
    });
    c.err("linformer: max_len 0", lf, || {
        linformer_attention(8, LinformerConfig::new(MhaConfig::new(2), 4, 0), vb())?;
        Ok(())
    });
    c.err("Linformer forward: longer than max_len", lf, || {
        let l = linformer_attention(8, LinformerConfig::new(MhaConfig::new(2), 4, 8), vb())?;
        l.forward(&t((1, 9, 8)))?;
        Ok(())
    });
    let tl = "TransformerEncoderLayer";
    let tc = || TransformerEncoderLayerConfig::new(2, 16);
    for (name, cfg) in [
        ("0 heads", TransformerEncoderLayerConfig::new(0, 16)),
        (
            "dim_feedforward 0",
            TransformerEncoderLayerConfig::new(2, 0),
        ),
        (
            "dropout 1.5",
            TransformerEncoderLayerConfig {
                dropout: 1.5,
                ..tc()
            },
        ),
        (
            "attn_dropout NaN",
            TransformerEncoderLayerConfig {
                attn_dropout: f64::NAN,
                ..tc()
            },
        ),
        (
            "layer_norm_eps NaN",
            TransformerEncoderLayerConfig {
                layer_norm_eps: f64::NAN,
                ..tc()
            },
        ),
        (
            "drop_path -1",
            TransformerEncoderLayerConfig {
                drop_path: -1.0,
                ..tc()
            },
        ),
        (
            "layer_scale NaN",
            TransformerEncoderLayerConfig {
                layer_scale: Some(f64::NAN),
                ..tc()
            },
        ),
    ] {
        c.err(
            &format!("transformer_encoder_layer: {name}"),
            tl,
            move || {
                transformer_encoder_layer(8, cfg, vb())?;
                Ok(())
            },
        );
    }
    c.err(
        "TransformerEncoderLayer forward: wrong dim",
        tl,
        move || {
            let l = transformer_encoder_layer(8, tc(), vb())?;
            l.forward_t(&t((1, 3, 6)), &AttentionMask::None, false)?;
            Ok(())
        },
    );
    c.err(
        "TransformerEncoderLayer forward: mask of the wrong shape",
        "",
        move || {
            let l = transformer_encoder_layer(8, tc(), vb())?;
            let m = AttentionMask::Additive(t((2, 2)));
            l.forward_t(&t((1, 3, 8)), &m, false)?;
            Ok(())
        },
    );
    c.err(
        "transformer_encoder: 0 layers",
        "TransformerEncoder",
        move || {
            transformer_encoder(8, TransformerEncoderConfig::new(tc(), 0), vb())?;
            Ok(())
        },
    );
    c.val(
        "TransformerEncoder forward: non-contiguous == contiguous",
        move || {
            let e = transformer_encoder(8, TransformerEncoderConfig::new(tc(), 2), vb())?;
            let x = t((1, 8, 3)).transpose(1, 2)?;
            let m = AttentionMask::None;
            close(
                "y",
                &e.forward_t(&x, &m, false)?,
                &e.forward_t(&x.contiguous()?, &m, false)?,
                1e-5,
            )
        },
    );
    let pe = "PatchEmbed";
    c.err("patch_embed: patch 0", pe, || {
        patch_embed(8, PatchEmbedConfig::new(0, 3), vb())?;
        Ok(())
    });
    c.err("patch_embed: 0 in-channels", pe, || {
        patch_embed(8, PatchEmbedConfig::new(4, 0), vb())?;
        Ok(())
    });
    c.err(
        "PatchEmbed forward: image not divisible by the patch",
        pe,
        || {
            patch_embed(8, PatchEmbedConfig::new(4, 3), vb())?.forward(&t((1, 3, 6, 8)))?;
            Ok(())
        },
    );
    c.err("PatchEmbed forward: wrong channels", pe, || {
        patch_embed(8, PatchEmbedConfig::new(4, 3), vb())?.forward(&t((1, 1, 8, 8)))?;
        Ok(())
    });
    let ve = "VitEmbedding";
    c.err(
        "vit_embedding: image not divisible by the patch",
        pe,
        || {
            vit_embedding((10, 8), 8, PatchEmbedConfig::new(4, 3), vb())?;
            Ok(())
        },
    );
    c.err("VitEmbedding forward: another image size", ve, || {
        let v = vit_embedding((8, 8), 8, PatchEmbedConfig::new(4, 3), vb())?;
        v.forward_t(&t((1, 3, 12, 8)), false)?;
        Ok(())
    });
    c.err("hybrid_vit_embedding: no stem channels", "ConvStem", || {
        hybrid_vit_embedding((8, 8), 8, ConvStemConfig::new(3, vec![]), vb())?;
        Ok(())
    });
    let se = "SqueezeExcite";
    for (name, r) in [("NaN", f64::NAN), ("0", 0.0), ("-0.25", -0.25)] {
        c.err(&format!("squeeze_excite: rd_ratio {name}"), se, move || {
            let cfg = SqueezeExciteConfig {
                rd_ratio: r,
                rd_channels: None,
                ..Default::default()
            };
            squeeze_excite(8, cfg, vb())?;
            Ok(())
        });
    }
    c.err("squeeze_excite: rd_divisor 0", se, || {
        let cfg = SqueezeExciteConfig {
            rd_divisor: 0,
            rd_channels: None,
            ..Default::default()
        };
        squeeze_excite(8, cfg, vb())?;
        Ok(())
    });
    c.err("SqueezeExcite forward: wrong channels", se, || {
        squeeze_excite(8, SqueezeExciteConfig::default(), vb())?.forward(&t((1, 4, 3, 3)))?;
        Ok(())
    });
    let cb = "Cbam";
    c.err("cbam: even spatial kernel", cb, || {
        let cfg = CbamConfig {
            spatial_kernel: 4,
            ..Default::default()
        };
        cbam(8, cfg, vb())?;
        Ok(())
    });
    c.err("cbam: spatial kernel 0", cb, || {
        let cfg = CbamConfig {
            spatial_kernel: 0,
            ..Default::default()
        };
        cbam(8, cfg, vb())?;
        Ok(())
    });
    c.err("Cbam forward: wrong channels", cb, || {
        cbam(8, CbamConfig::default(), vb())?.forward(&t((1, 4, 5, 5)))?;
        Ok(())
    });
    c.err("Cbam forward: rank 3", cb, || {
        cbam(8, CbamConfig::default(), vb())?.forward(&t((8, 5, 5)))?;
        Ok(())
    });
    c.val(
        "Cbam forward: 1x1 map, non-contiguous == contiguous",
        || {
            let m = cbam(8, CbamConfig::default(), vb())?;
            let x = t((1, 1, 2, 8)).permute((2, 3, 0, 1))?;
            close("y", &m.forward(&x)?, &m.forward(&x.contiguous()?)?, 1e-6)
        },
    );
    c.list
}
