//! Broken checkpoints for every loader.

use super::*;

pub(super) fn loader_cases() -> Vec<Case> {
    let mut c = Cases::new("loaders");
    let bn_tensors = |w: Tensor| {
        vec![
            ("bn.weight", w),
            ("bn.bias", t(3)),
            ("bn.running_mean", t(3)),
            ("bn.running_var", tpos(3)),
        ]
    };
    c.err("BatchNorm: wrong-shape weight", "BatchNorm", move || {
        batch_norm(3, bcfg(), vb_of(bn_tensors(t(4))).pp("bn"))?;
        Ok(())
    });
    c.err("BatchNorm: missing running_var", "BatchNorm", move || {
        let mut ts = bn_tensors(t(3));
        ts.pop();
        batch_norm(3, bcfg(), vb_of(ts).pp("bn"))?;
        Ok(())
    });
    c.err(
        "BatchNorm: num_batches_tracked negative",
        "BatchNorm",
        move || {
            let mut ts = bn_tensors(t(3));
            ts.push(("bn.num_batches_tracked", Tensor::new(-5i64, &cpu())?));
            batch_norm(3, bcfg(), vb_of(ts).pp("bn"))?;
            Ok(())
        },
    );
    c.err("BatchNorm: running_var negative", "BatchNorm", move || {
        let mut ts = bn_tensors(t(3));
        ts.pop();
        ts.push(("bn.running_var", Tensor::new(&[1f32, -1., 1.], &cpu())?));
        batch_norm(3, bcfg(), vb_of(ts).pp("bn"))?;
        Ok(())
    });
    c.err(
        "MultiHeadAttention: wrong-shape in_proj_weight",
        "MultiHeadAttention",
        || {
            let ts = vec![
                ("attn.in_proj_weight", t((24, 6))),
                ("attn.in_proj_bias", t(24)),
                ("attn.out_proj.weight", t((8, 8))),
                ("attn.out_proj.bias", t(8)),
            ];
            multi_head_attention(8, MhaConfig::new(2), vb_of(ts).pp("attn"))?;
            Ok(())
        },
    );
    c.err(
        "MultiHeadAttention: missing out_proj",
        "MultiHeadAttention",
        || {
            let ts = vec![
                ("attn.in_proj_weight", t((24, 8))),
                ("attn.in_proj_bias", t(24)),
            ];
            multi_head_attention(8, MhaConfig::new(2), vb_of(ts).pp("attn"))?;
            Ok(())
        },
    );
    c.err("MambaBlock: empty checkpoint", "MambaBlock", || {
        mamba_block(MambaConfig::new(8), vb_of(vec![]).pp("mixer"))?;
        Ok(())
    });
    c.err("MambaBlock: wrong-shape A_log", "MambaBlock", || {
        // Build the right tensors from a fresh block, then break A_log.
        let vm = VarMap::new();
        mamba_block(
            MambaConfig::new(8),
            VarBuilder::from_varmap(&vm, DType::F32, &cpu()),
        )?;
        let mut ts: Vec<(String, Tensor)> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        for (k, v) in ts.iter_mut() {
            if k.contains("A_log") {
                *v = t((3, 3));
            }
        }
        let m: HashMap<String, Tensor> = ts.into_iter().collect();
        mamba_block(
            MambaConfig::new(8),
            VarBuilder::from_tensors(m, DType::F32, &cpu()),
        )?;
        Ok(())
    });
    c.err("MambaModel: empty checkpoint", "MambaModel", || {
        mamba_model(
            MambaModelConfig::new(16, 1, MambaConfig::new(8)),
            vb_of(vec![]),
        )?;
        Ok(())
    });
    c.err(
        "SeparableConv2d: wrong-shape conv_pw",
        "SeparableConv2d",
        || {
            let ts = vec![
                ("sep.conv_dw.weight", t((2, 1, 3, 3))),
                ("sep.conv_pw.weight", t((4, 3, 1, 1))),
            ];
            separable_conv2d(2, 4, 3, scfg(), vb_of(ts).pp("sep"))?;
            Ok(())
        },
    );
    c.err("SeparableConv2d: missing bn_dw", "SeparableConv2d", || {
        let ts = vec![
            ("sep.conv_dw.weight", t((2, 1, 3, 3))),
            ("sep.conv_pw.weight", t((4, 2, 1, 1))),
        ];
        separable_conv2d(
            2,
            4,
            3,
            SeparableConv2dConfig::xception(),
            vb_of(ts).pp("sep"),
        )?;
        Ok(())
    });
    c.err("Sppf: wrong-shape cv1", "Sppf", || {
        let bn = |p: &str, n: usize| {
            vec![
                (format!("{p}.bn.weight"), t(n)),
                (format!("{p}.bn.bias"), t(n)),
                (format!("{p}.bn.running_mean"), t(n)),
                (format!("{p}.bn.running_var"), tpos(n)),
            ]
        };
        let mut ts = vec![
            ("s.cv1.conv.weight".to_string(), t((2, 5, 1, 1))),
            ("s.cv2.conv.weight".to_string(), t((4, 8, 1, 1))),
        ];
        ts.extend(bn("s.cv1", 2));
        ts.extend(bn("s.cv2", 4));
        let m: HashMap<String, Tensor> = ts.into_iter().collect();
        sppf(
            4,
            4,
            5,
            VarBuilder::from_tensors(m, DType::F32, &cpu()).pp("s"),
        )?;
        Ok(())
    });
    c.err("Sppf: empty checkpoint", "Sppf", || {
        sppf(4, 4, 5, vb_of(vec![]).pp("s"))?;
        Ok(())
    });
    c.err("LayerNorm: wrong-shape weight", "LayerNorm", || {
        let ts = vec![("ln.weight", t(5)), ("ln.bias", t(4))];
        layer_norm_layer(4, LayerNormConfig::default(), vb_of(ts).pp("ln"))?;
        Ok(())
    });
    c.err("GroupNorm: missing bias", "GroupNorm", || {
        let ts = vec![("gn.weight", t(4))];
        group_norm_layer(2, 4, GroupNormConfig::default(), vb_of(ts).pp("gn"))?;
        Ok(())
    });
    c.list
}
