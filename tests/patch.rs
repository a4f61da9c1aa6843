//! ViT patch embedding, hybrid conv stem and class / position tokens: shapes, tensor names,
//! patchify semantics and bad-input errors.

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use candle_tricks::attention::{
    conv_stem, hybrid_vit_embedding, patch_embed, vit_embedding, ConvStemConfig, PatchEmbedConfig,
};

fn shapes(varmap: &VarMap) -> Vec<(String, Vec<usize>)> {
    let data = varmap.data().lock().unwrap();
    let mut v: Vec<_> = data
        .iter()
        .map(|(k, t)| (k.clone(), t.as_tensor().dims().to_vec()))
        .collect();
    v.sort();
    v
}

#[test]
fn vit_embedding_names_shapes_and_values() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let cfg = PatchEmbedConfig::new(4, 3).with_norm(true);
    let vit = vit_embedding((8, 12), 10, cfg, vb).unwrap();
    assert_eq!(vit.num_patches(), 6);
    let names = shapes(&varmap);
    let expect: Vec<(String, Vec<usize>)> = vec![
        ("cls_token".into(), vec![1, 1, 10]),
        ("patch_embed.norm.bias".into(), vec![10]),
        ("patch_embed.norm.weight".into(), vec![10]),
        ("patch_embed.proj.bias".into(), vec![10]),
        ("patch_embed.proj.weight".into(), vec![10, 3, 4, 4]),
        ("pos_embed".into(), vec![1, 7, 10]),
    ];
    assert_eq!(names, expect);
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 3, 8, 12), &dev).unwrap()).unwrap();
    let y = vit.forward_t(x.as_tensor(), false).unwrap();
    assert_eq!(y.dims(), &[2, 7, 10]);
    // Token 0 is cls_token + pos_embed[0] for every image.
    let data = varmap.data().lock().unwrap();
    let cls =
        (data["cls_token"].as_tensor() + data["pos_embed"].as_tensor().narrow(1, 0, 1)).unwrap();
    drop(data);
    for b in 0..2 {
        let t0 = y.narrow(0, b, 1).unwrap().narrow(1, 0, 1).unwrap();
        let d = (t0 - &cls).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
    }
    // Gradients reach the image and every parameter.
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(x.as_tensor()).is_some());
    for v in varmap.all_vars() {
        assert!(grads.get(&v).is_some());
    }
}

#[test]
fn patch_embed_is_a_patch_wise_linear_map() {
    // Token (i, j) depends only on patch (i, j), row-major: compare with a linear layer over the
    // flattened patch.
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let pe = patch_embed(5, PatchEmbedConfig::new(2, 2), vb).unwrap();
    let x = Tensor::randn(0f32, 1., (1, 2, 4, 6), &dev).unwrap();
    let y = pe.forward(&x).unwrap(); // (1, 6, 5)
    assert_eq!(y.dims(), &[1, 6, 5]);
    let data = varmap.data().lock().unwrap();
    let w = data["proj.weight"].as_tensor().reshape((5, 8)).unwrap();
    let b = data["proj.bias"].as_tensor().clone();
    for (t, (i, j)) in [(0, (0, 0)), (4, (1, 1)), (5, (1, 2))] {
        let patch = x
            .narrow(2, 2 * i, 2)
            .unwrap()
            .narrow(3, 2 * j, 2)
            .unwrap()
            .reshape((1, 8))
            .unwrap();
        let r = patch
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        let d = (y.narrow(1, t, 1).unwrap().squeeze(1).unwrap() - r).unwrap();
        let d = d
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "token {t}: {d}");
    }
}

#[test]
fn hybrid_stem_names_and_shapes() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let stem = ConvStemConfig::new(1, vec![8, 16]);
    let emb = hybrid_vit_embedding((13, 16), 12, stem, vb).unwrap();
    // 13 → 7 → 4, 16 → 8 → 4.
    assert_eq!(emb.num_patches(), 16);
    let names: Vec<String> = shapes(&varmap).into_iter().map(|(k, _)| k).collect();
    for n in [
        "cls_token",
        "pos_embed",
        "patch_embed.backbone.0.conv.weight",
        "patch_embed.backbone.0.bn.weight",
        "patch_embed.backbone.0.bn.running_mean",
        "patch_embed.backbone.1.conv.weight",
        "patch_embed.backbone.1.bn.running_var",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
    ] {
        assert!(names.iter().any(|k| k == n), "missing {n} in {names:?}");
    }
    assert!(!names.iter().any(|k| k.ends_with("conv.bias")));
    let x = Tensor::randn(0f32, 1., (3, 1, 13, 16), &dev).unwrap();
    assert_eq!(emb.forward_t(&x, true).unwrap().dims(), &[3, 17, 12]);
    assert_eq!(emb.forward_t(&x, false).unwrap().dims(), &[3, 17, 12]);
}

#[test]
fn bad_inputs_error_and_name_the_block() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let vit = vit_embedding((8, 8), 6, PatchEmbedConfig::new(4, 3), vb.pp("v")).unwrap();
    let z = |s: &[usize], dt: DType| Tensor::zeros(s, dt, &dev).unwrap();
    for (x, name) in [
        (z(&[3, 8, 8], DType::F32), "PatchEmbed"),
        (z(&[1, 2, 8, 8], DType::F32), "PatchEmbed"),
        (z(&[1, 3, 8, 8], DType::F64), "PatchEmbed"),
        (z(&[0, 3, 8, 8], DType::F32), "PatchEmbed"),
        (z(&[1, 3, 12, 8], DType::F32), "VitEmbedding"), // pos_embed is for 8×8
    ] {
        let e = vit.forward_t(&x, false).unwrap_err().to_string();
        assert!(e.contains(name), "{e}");
    }
    let e = vit.add_cls_and_pos(&z(&[1, 5, 6], DType::F32)).unwrap_err();
    assert!(e.to_string().contains("VitEmbedding"));
    // A size that is not a multiple of the patch.
    let pe = patch_embed(6, PatchEmbedConfig::new(4, 3), vb.pp("p")).unwrap();
    let e = pe.apply(&z(&[1, 3, 9, 8], DType::F32)).unwrap_err();
    assert!(e.to_string().contains("PatchEmbed"));
    let e = vit_embedding((10, 8), 6, PatchEmbedConfig::new(4, 3), vb.pp("w")).unwrap_err();
    assert!(e.to_string().contains("PatchEmbed"));
    // Configs.
    for cfg in [PatchEmbedConfig::new(0, 3), PatchEmbedConfig::new(4, 0)] {
        let e = patch_embed(6, cfg, vb.pp("q")).unwrap_err();
        assert!(e.to_string().contains("PatchEmbed"));
    }
    for cfg in [
        ConvStemConfig::new(1, vec![]),
        ConvStemConfig::new(1, vec![8, 0]),
    ] {
        let e = conv_stem(6, cfg, vb.pp("s")).unwrap_err();
        assert!(e.to_string().contains("ConvStem"));
    }
    let stem = conv_stem(6, ConvStemConfig::new(1, vec![4]), vb.pp("t")).unwrap();
    let e = stem
        .apply(&z(&[1, 2, 8, 8], DType::F32), false)
        .unwrap_err();
    assert!(e.to_string().contains("ConvStem"));
}
