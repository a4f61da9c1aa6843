//! Muon (+ MuonWithAdamW), schedule-free AdamW, Lookahead and SAM against their references
//! (fixtures from `tests/fixtures/gen_optim_wrappers.py`: torch.optim.Muon with the iteration
//! in f32, the `schedulefree` package, the Lookahead paper's rule, davda54/sam), convergence,
//! exact resume, the NaN/Inf guard, the tensor path and bad configs.

mod optim_shared;

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use candle_tricks::optim::path::force_tensor_path;
use candle_tricks::optim::{
    Adam, AdamConfig, AdamW, AdamWConfig, AdjustLr, Lookahead, LookaheadConfig, Muon, MuonConfig,
    MuonWithAdamW, NonFinite, OptimizerState, ParamGroup, Sam, SamConfig, ScheduleFreeAdamW,
    ScheduleFreeAdamWConfig, Sgd, SgdConfig,
};
use candle_tricks::Error;
use optim_shared::{grads, max_rel, vars};

const TOL: f64 = 1e-6;

fn load_fixture(name: &str) -> HashMap<String, Tensor> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    candle_core::safetensors::load(path, &Device::Cpu).expect("fixture file")
}

fn fixtures() -> HashMap<String, Tensor> {
    let mut f = load_fixture("optim.safetensors");
    f.extend(load_fixture("optim_wrappers.safetensors"));
    f
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

// ---------------------------------------------------------------- Muon

fn muon_cfg(case: &str) -> MuonConfig {
    let c = MuonConfig::default().with_lr(0.02);
    match case {
        "muon" => c,
        "muon_plain" => c
            .with_momentum(0.9)
            .with_nesterov(false)
            .with_weight_decay(0.0),
        "muon_rms" => c
            .with_lr(0.01)
            .with_weight_decay(0.05)
            .with_adjust_lr_fn(AdjustLr::MatchRmsAdamW),
        "muon_spectral" => c
            .with_adjust_lr_fn(AdjustLr::SpectralUnclamped)
            .with_ns_steps(3)
            .with_ns_coefficients([3.0, -3.2, 1.2])
            .with_eps(1e-5),
        other => panic!("unknown case {other}"),
    }
}

fn muon_vars(f: &HashMap<String, Tensor>, dtype: DType) -> (Var, Var) {
    let a = Var::from_tensor(&f["muon.init.a"].to_dtype(dtype).unwrap()).unwrap();
    let b = Var::from_tensor(&f["muon.init.b"].to_dtype(dtype).unwrap()).unwrap();
    (a, b)
}

fn muon_grads(f: &HashMap<String, Tensor>, t: usize, a: &Var, b: &Var) -> GradStore {
    let mut g = GradStore::default();
    let dt = a.dtype();
    g.insert(a, f[&format!("muon.grad.{t}.a")].to_dtype(dt).unwrap());
    g.insert(b, f[&format!("muon.grad.{t}.b")].to_dtype(dt).unwrap());
    g
}

#[test]
fn muon_matches_torch() {
    let f = fixtures();
    for case in ["muon", "muon_plain", "muon_rms", "muon_spectral"] {
        let (a, b) = muon_vars(&f, DType::F32);
        let mut opt = Muon::new(vec![a.clone(), b.clone()], muon_cfg(case)).unwrap();
        let mut worst = 0f64;
        for t in 0..20 {
            opt.try_step(&muon_grads(&f, t, &a, &b)).unwrap();
            let ea = f[&format!("{case}.a")].get(t).unwrap();
            let eb = f[&format!("{case}.b")].get(t).unwrap();
            worst = worst.max(max_rel(a.as_tensor(), &ea));
            worst = worst.max(max_rel(b.as_tensor(), &eb));
        }
        assert!(worst <= TOL, "{case}: worst relative error {worst:e}");
    }
}

#[test]
fn muon_half_params_track_f32() {
    let f = fixtures();
    for dtype in [DType::BF16, DType::F16] {
        let (a, b) = muon_vars(&f, dtype);
        let mut opt = Muon::new(vec![a.clone(), b.clone()], muon_cfg("muon")).unwrap();
        for t in 0..20 {
            opt.try_step(&muon_grads(&f, t, &a, &b)).unwrap();
        }
        let err = max_rel(a.as_tensor(), &f["muon.a"].get(19).unwrap());
        let tol = if dtype == DType::BF16 { 1e-2 } else { 2e-3 };
        assert!(err < tol, "{dtype:?}: {err:e}");
    }
}

/// Least squares over a matrix: min |A W - B|^2 with a full-rank W* (Muon's problem class).
#[test]
fn muon_solves_least_squares() {
    let dev = Device::Cpu;
    let a = Tensor::new(
        &[
            [1.0f32, 0.2, -0.3, 0.1],
            [0.0, 1.5, 0.4, -0.2],
            [0.3, -0.1, 0.8, 0.5],
            [-0.2, 0.3, 0.1, 1.2],
            [0.5, 0.5, -0.5, 0.5],
        ],
        &dev,
    )
    .unwrap();
    let w_star = Tensor::new(
        &[
            [1.0f32, -1.0, 0.5],
            [0.3, 0.8, -0.6],
            [-0.7, 0.2, 1.0],
            [0.4, 0.4, 0.4],
        ],
        &dev,
    )
    .unwrap();
    let target = a.matmul(&w_star).unwrap();
    let w = Var::zeros((4, 3), DType::F32, &dev).unwrap();
    let cfg = MuonConfig::default().with_lr(0.05).with_weight_decay(0.0);
    let mut opt = Muon::new(vec![w.clone()], cfg).unwrap();
    let loss = |w: &Var| {
        (a.matmul(w.as_tensor()).unwrap() - &target)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let start = loss(&w).to_scalar::<f32>().unwrap();
    for step in 0..400 {
        // Muon's steps have a fixed spectral size: decay the rate to settle.
        opt.set_learning_rate(0.05 * (1.0 - step as f64 / 400.0));
        opt.backward_step(&loss(&w)).unwrap();
    }
    let end = loss(&w).to_scalar::<f32>().unwrap();
    assert!(end < 1e-3 * start, "loss {start} -> {end}");
}

#[test]
fn muon_refuses_non_matrices_and_bad_configs() {
    let dev = Device::Cpu;
    let v = Var::zeros(5, DType::F32, &dev).unwrap();
    let e = Muon::new(vec![v], MuonConfig::default()).unwrap_err();
    assert!(
        matches!(e, Error::ShapeMismatch { block: "Muon", .. }),
        "{e}"
    );
    let m = || vec![Var::zeros((2, 2), DType::F32, &dev).unwrap()];
    for cfg in [
        MuonConfig::default().with_lr(-1.0),
        MuonConfig::default().with_momentum(1.0),
        MuonConfig::default().with_eps(0.0),
        MuonConfig::default().with_ns_steps(100),
        MuonConfig::default().with_ns_coefficients([f64::NAN, 0.0, 0.0]),
        MuonConfig::default().with_weight_decay(f64::INFINITY),
    ] {
        let e = Muon::new(m(), cfg).unwrap_err();
        assert!(
            matches!(e, Error::InvalidConfig { block: "Muon", .. }),
            "{e}"
        );
    }
}

#[test]
fn muon_with_adamw_is_the_two_optimizers() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let _emb = candle_nn::embedding(6, 4, vb.pp("tok_embed")).unwrap();
    let _fc = candle_nn::linear(4, 4, vb.pp("fc")).unwrap();
    let _head = candle_nn::linear(4, 6, vb.pp("lm_head")).unwrap();
    let _ln = candle_nn::layer_norm(4, 1e-5, vb.pp("ln")).unwrap();
    let muon = MuonConfig::default().with_lr(0.02);
    let adamw = AdamWConfig::default().with_lr(1e-3);
    let mut opt = MuonWithAdamW::from_varmap(&varmap, muon, adamw).unwrap();
    assert_eq!(opt.num_muon_params(), 1);
    assert_eq!(opt.num_adamw_params(), 6);
    // Copies of every var, stepped by a separate Muon (fc.weight) and AdamW (the rest).
    let named: Vec<(String, Var)> = {
        let data = varmap.data().lock().unwrap();
        let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let copies: Vec<Var> = named
        .iter()
        .map(|(_, v)| Var::from_tensor(&v.as_tensor().copy().unwrap()).unwrap())
        .collect();
    let pick = |sel: bool| -> Vec<Var> {
        named
            .iter()
            .zip(&copies)
            .filter(|((n, _), _)| (n == "fc.weight") == sel)
            .map(|(_, c)| c.clone())
            .collect()
    };
    let mut ref_muon = Muon::new(pick(true), muon).unwrap();
    let ref_adamw = {
        let rest: Vec<(String, Var)> = named
            .iter()
            .zip(&copies)
            .filter(|((n, _), _)| n != "fc.weight")
            .map(|((n, _), c)| (n.clone(), c.clone()))
            .collect();
        let (no, yes): (Vec<_>, Vec<_>) = rest
            .into_iter()
            .partition(|(n, v)| candle_tricks::optim::is_no_decay(n, v.rank()));
        let groups = vec![
            ParamGroup::named(yes),
            ParamGroup::named(no).with_weight_decay(0.0),
        ];
        AdamW::with_groups(groups, adamw)
    };
    let mut ref_adamw = ref_adamw.unwrap();
    for t in 0..3 {
        let mut g = GradStore::default();
        let mut gr = GradStore::default();
        for (k, ((_, v), c)) in named.iter().zip(&copies).enumerate() {
            let grad = (v.as_tensor().ones_like().unwrap() * (0.3 * (k + t) as f64 - 1.0)).unwrap();
            g.insert(v, grad.clone());
            gr.insert(c, grad);
        }
        opt.try_step(&g).unwrap();
        ref_muon.try_step(&gr).unwrap();
        ref_adamw.try_step(&gr).unwrap();
    }
    for ((n, v), c) in named.iter().zip(&copies) {
        assert_eq!(bits(v.as_tensor()), bits(c.as_tensor()), "{n}");
    }
    // A schedule scales both rates, keeping their ratio.
    opt.set_learning_rate(0.01);
    assert_eq!(opt.muon().unwrap().config().lr, 0.01);
    assert!((opt.adamw().unwrap().config().lr - 5e-4).abs() < 1e-12);
}

// ---------------------------------------------------------------- schedule-free

fn sf_cfg(case: &str) -> ScheduleFreeAdamWConfig {
    let c = ScheduleFreeAdamWConfig::default().with_lr(0.01);
    match case {
        "sf" => c,
        "sf_all" => c
            .with_lr(0.02)
            .with_betas(0.8, 0.99)
            .with_eps(1e-6)
            .with_weight_decay(0.1)
            .with_warmup_steps(5)
            .with_r(0.5)
            .with_weight_lr_power(1.5),
        "sf_groups" => c.with_warmup_steps(3),
        other => panic!("unknown case {other}"),
    }
}

fn sf_new(case: &str, w: &Var, b: &Var) -> ScheduleFreeAdamW {
    if case == "sf_groups" {
        let groups = vec![
            ParamGroup::new(vec![w.clone()]).with_weight_decay(0.1),
            ParamGroup::new(vec![b.clone()])
                .with_weight_decay(0.0)
                .with_lr_mult(0.5),
        ];
        ScheduleFreeAdamW::with_groups(groups, sf_cfg(case)).unwrap()
    } else {
        ScheduleFreeAdamW::new(vec![w.clone(), b.clone()], sf_cfg(case)).unwrap()
    }
}

/// Worst relative error of the train (y) and eval (x) weights of a case.
fn sf_error(f: &HashMap<String, Tensor>, case: &str) -> f64 {
    let (w, b) = vars(f, DType::F32);
    let mut opt = sf_new(case, &w, &b);
    let mut worst = 0f64;
    for t in 0..20 {
        opt.try_step(&grads(f, case, t, &w, &b)).unwrap();
        worst = worst.max(max_rel(
            w.as_tensor(),
            &f[&format!("{case}.w")].get(t).unwrap(),
        ));
        worst = worst.max(max_rel(
            b.as_tensor(),
            &f[&format!("{case}.b")].get(t).unwrap(),
        ));
        opt.eval().unwrap();
        worst = worst.max(max_rel(
            w.as_tensor(),
            &f[&format!("{case}.eval.w")].get(t).unwrap(),
        ));
        worst = worst.max(max_rel(
            b.as_tensor(),
            &f[&format!("{case}.eval.b")].get(t).unwrap(),
        ));
        opt.train().unwrap();
    }
    worst
}

#[test]
fn schedule_free_matches_the_package() {
    let f = fixtures();
    for case in ["sf", "sf_all", "sf_groups"] {
        let worst = sf_error(&f, case);
        assert!(worst <= TOL, "{case}: worst relative error {worst:e}");
    }
}

#[test]
fn schedule_free_tensor_path_matches_fused() {
    let f = fixtures();
    let run = |tensor: bool| {
        let _guard = tensor.then(force_tensor_path);
        let (w, b) = vars(&f, DType::F32);
        let mut opt = sf_new("sf_all", &w, &b);
        for t in 0..10 {
            opt.try_step(&grads(&f, "sf_all", t, &w, &b)).unwrap();
        }
        opt.eval().unwrap();
        (w.as_tensor().copy().unwrap(), b.as_tensor().copy().unwrap())
    };
    let (fw, fb) = run(false);
    let (tw, tb) = run(true);
    assert!(max_rel(&fw, &tw) < 1e-6 && max_rel(&fb, &tb) < 1e-6);
}

#[test]
fn schedule_free_step_in_eval_mode_is_refused() {
    let f = fixtures();
    let (w, b) = vars(&f, DType::F32);
    let mut opt = sf_new("sf", &w, &b);
    opt.try_step(&grads(&f, "sf", 0, &w, &b)).unwrap();
    opt.eval().unwrap();
    let before = bits(w.as_tensor());
    let e = opt.try_step(&grads(&f, "sf", 1, &w, &b)).unwrap_err();
    assert!(e.to_string().contains("train()"), "{e}");
    assert_eq!(bits(w.as_tensor()), before);
    // eval() twice is a no-op, and train() restores y.
    opt.eval().unwrap();
    assert_eq!(bits(w.as_tensor()), before);
    opt.train().unwrap();
    let y = f["sf.w"].get(0).unwrap();
    assert!(max_rel(w.as_tensor(), &y) <= TOL);
}

/// bf16 / f16 parameters (f32 master copy and state) follow the f32 trajectory, and the mode
/// switch keeps the master copy in step.
#[test]
fn schedule_free_half_params_track_f32() {
    let f = fixtures();
    for (dtype, tol) in [(DType::BF16, 2e-2), (DType::F16, 3e-3)] {
        let (w, b) = vars(&f, dtype);
        let mut opt = sf_new("sf", &w, &b);
        for t in 0..20 {
            opt.try_step(&grads(&f, "sf", t, &w, &b)).unwrap();
            opt.eval().unwrap();
            opt.train().unwrap();
        }
        let err = max_rel(w.as_tensor(), &f["sf.w"].get(19).unwrap());
        assert!(err < tol, "{dtype:?}: {err:e}");
        opt.eval().unwrap();
        let err = max_rel(w.as_tensor(), &f["sf.eval.w"].get(19).unwrap());
        assert!(err < tol, "{dtype:?} eval: {err:e}");
    }
}

// ---------------------------------------------------------------- Lookahead

fn lookahead_new(case: &str, w: &Var, b: &Var) -> Box<dyn LookaheadLike> {
    let vs = vec![w.clone(), b.clone()];
    match case {
        "lookahead_sgd" => {
            let sgd = Sgd::new(
                vs.clone(),
                SgdConfig::default().with_lr(0.05).with_momentum(0.9),
            )
            .unwrap();
            let cfg = LookaheadConfig::default().with_k(5).with_alpha(0.5);
            Box::new(Lookahead::new(sgd, vs, cfg).unwrap())
        }
        "lookahead_adam" => {
            let adam = Adam::new(vs.clone(), AdamConfig::default().with_lr(0.01)).unwrap();
            let cfg = LookaheadConfig::default().with_k(3).with_alpha(0.8);
            Box::new(Lookahead::new(adam, vs, cfg).unwrap())
        }
        other => panic!("unknown case {other}"),
    }
}

/// Lookahead over either inner optimizer, as a trait object.
trait LookaheadLike {
    fn step_grads(&mut self, g: &GradStore) -> candle_tricks::Result<()>;
    fn state(&self) -> HashMap<String, Tensor>;
    fn load(&mut self, sd: &HashMap<String, Tensor>) -> candle_tricks::Result<()>;
}

impl<O: Optimizer + OptimizerState> LookaheadLike for Lookahead<O> {
    fn step_grads(&mut self, g: &GradStore) -> candle_tricks::Result<()> {
        self.try_step(g)
    }
    fn state(&self) -> HashMap<String, Tensor> {
        self.state_dict().unwrap()
    }
    fn load(&mut self, sd: &HashMap<String, Tensor>) -> candle_tricks::Result<()> {
        self.load_state_dict(sd)
    }
}

#[test]
fn lookahead_matches_the_paper_rule() {
    let f = fixtures();
    // Both update paths (the inner optimizer's and the synchronisation's).
    for (case, tensor) in [
        ("lookahead_sgd", false),
        ("lookahead_adam", false),
        ("lookahead_adam", true),
    ] {
        let _guard = tensor.then(force_tensor_path);
        let (w, b) = vars(&f, DType::F32);
        let mut opt = lookahead_new(case, &w, &b);
        let mut worst = 0f64;
        for t in 0..20 {
            opt.step_grads(&grads(&f, case, t, &w, &b)).unwrap();
            worst = worst.max(max_rel(
                w.as_tensor(),
                &f[&format!("{case}.w")].get(t).unwrap(),
            ));
            worst = worst.max(max_rel(
                b.as_tensor(),
                &f[&format!("{case}.b")].get(t).unwrap(),
            ));
        }
        assert!(
            worst <= TOL,
            "{case} (tensor path {tensor}): worst relative error {worst:e}"
        );
    }
}

// ---------------------------------------------------------------- SAM

fn sam_loss(f: &HashMap<String, Tensor>, w: &Var, b: &Var) -> candle_core::Result<Tensor> {
    let fit = f["sam.x"]
        .matmul(w.as_tensor())?
        .broadcast_add(b.as_tensor())?;
    let mse = (fit - &f["sam.y"])?.sqr()?.mean_all()?;
    mse + (w.as_tensor().powf(4.0)?.sum_all()? * 0.01)?
}

#[test]
fn sam_matches_the_reference_algorithm() {
    let f = fixtures();
    for case in ["sam_sgd", "sam_adaptive"] {
        let (w, b) = vars(&f, DType::F32);
        let vs = vec![w.clone(), b.clone()];
        let mut worst = 0f64;
        let mut check = |t: usize, loss: &Tensor| {
            worst = worst.max(max_rel(
                w.as_tensor(),
                &f[&format!("{case}.w")].get(t).unwrap(),
            ));
            worst = worst.max(max_rel(
                b.as_tensor(),
                &f[&format!("{case}.b")].get(t).unwrap(),
            ));
            worst = worst.max(max_rel(loss, &f[&format!("{case}.loss")].get(t).unwrap()));
        };
        if case == "sam_sgd" {
            let sgd = Sgd::new(
                vs.clone(),
                SgdConfig::default().with_lr(0.05).with_momentum(0.9),
            )
            .unwrap();
            let mut sam = Sam::new(sgd, vs, SamConfig::default().with_rho(0.05)).unwrap();
            for t in 0..20 {
                let loss = sam.step(|| sam_loss(&f, &w, &b)).unwrap();
                check(t, &loss);
            }
        } else {
            let adam = Adam::new(vs.clone(), AdamConfig::default().with_lr(0.01)).unwrap();
            let cfg = SamConfig::default().with_rho(0.5).with_adaptive(true);
            let mut sam = Sam::new(adam, vs, cfg).unwrap();
            for t in 0..20 {
                let loss = sam.step(|| sam_loss(&f, &w, &b)).unwrap();
                check(t, &loss);
            }
        }
        assert!(worst <= TOL, "{case}: worst relative error {worst:e}");
    }
}

// ---------------------------------------------------------------- Rosenbrock

fn rosenbrock(p: &Var) -> Tensor {
    let v = p.as_tensor();
    let x = v.narrow(0, 0, 1).unwrap();
    let y = v.narrow(0, 1, 1).unwrap();
    let a = (x.affine(-1.0, 1.0).unwrap()).sqr().unwrap();
    let b = ((y - x.sqr().unwrap()).unwrap().sqr().unwrap() * 100.0).unwrap();
    (a + b).unwrap().sum_all().unwrap()
}

fn distance_to_min(p: &Var) -> f32 {
    let v = p.as_tensor().to_vec1::<f32>().unwrap();
    ((v[0] - 1.0).powi(2) + (v[1] - 1.0).powi(2)).sqrt()
}

#[test]
fn wrappers_converge_on_rosenbrock() {
    let dev = Device::Cpu;
    let start = [-1.5f32, 2.0];
    // Schedule-free AdamW: the evaluation weights reach the minimum.
    let p = Var::new(&start, &dev).unwrap();
    let cfg = ScheduleFreeAdamWConfig::default()
        .with_lr(0.05)
        .with_warmup_steps(50);
    let mut sf = ScheduleFreeAdamW::new(vec![p.clone()], cfg).unwrap();
    for _ in 0..10000 {
        sf.backward_step(&rosenbrock(&p)).unwrap();
    }
    sf.eval().unwrap();
    assert!(
        distance_to_min(&p) < 2e-2,
        "schedule-free: {}",
        distance_to_min(&p)
    );

    // Lookahead over Adam.
    let p = Var::new(&start, &dev).unwrap();
    let adam = Adam::new(vec![p.clone()], AdamConfig::default().with_lr(0.02)).unwrap();
    let mut la = Lookahead::new(adam, vec![p.clone()], LookaheadConfig::default()).unwrap();
    for _ in 0..6000 {
        la.backward_step(&rosenbrock(&p)).unwrap();
    }
    assert!(
        distance_to_min(&p) < 2e-2,
        "lookahead: {}",
        distance_to_min(&p)
    );

    // SAM over Adam (a small radius: the minimum of the sharp valley moves with rho).
    let p = Var::new(&start, &dev).unwrap();
    let adam = Adam::new(vec![p.clone()], AdamConfig::default().with_lr(0.02)).unwrap();
    let mut sam = Sam::new(adam, vec![p.clone()], SamConfig::default().with_rho(1e-3)).unwrap();
    for _ in 0..4000 {
        sam.step(|| Ok(rosenbrock(&p))).unwrap();
    }
    assert!(distance_to_min(&p) < 5e-2, "sam: {}", distance_to_min(&p));
}

// ---------------------------------------------------------------- resume

/// Ten steps, save to a file, a new optimizer over copies of the weights loads it, ten more
/// steps: the weights are those of twenty uninterrupted steps, bit for bit.
#[test]
fn resume_is_bit_identical() {
    let f = fixtures();
    let dir = std::env::temp_dir();

    // Muon.
    let run = |split: bool| {
        let (a, b) = muon_vars(&f, DType::F32);
        let mut opt = Muon::new(vec![a.clone(), b.clone()], muon_cfg("muon")).unwrap();
        let (mut a, mut b) = (a, b);
        for t in 0..20 {
            if split && t == 10 {
                let path = dir.join("candle_tricks_resume_muon.safetensors");
                opt.save_state(&path).unwrap();
                a = Var::from_tensor(&a.as_tensor().copy().unwrap()).unwrap();
                b = Var::from_tensor(&b.as_tensor().copy().unwrap()).unwrap();
                opt = Muon::new(vec![a.clone(), b.clone()], MuonConfig::default()).unwrap();
                opt.load_state(&path).unwrap();
                std::fs::remove_file(&path).ok();
            }
            opt.try_step(&muon_grads(&f, t, &a, &b)).unwrap();
        }
        (bits(a.as_tensor()), bits(b.as_tensor()))
    };
    assert_eq!(run(false), run(true), "Muon");

    // Schedule-free, saved in eval mode (weights x), resumed, back to train mode.
    let run = |split: bool| {
        let (mut w, mut b) = vars(&f, DType::F32);
        let mut opt = sf_new("sf_all", &w, &b);
        for t in 0..20 {
            if t == 10 {
                opt.eval().unwrap();
                if split {
                    let sd = opt.state_dict().unwrap();
                    w = Var::from_tensor(&w.as_tensor().copy().unwrap()).unwrap();
                    b = Var::from_tensor(&b.as_tensor().copy().unwrap()).unwrap();
                    opt = ScheduleFreeAdamW::new(vec![w.clone(), b.clone()], Default::default())
                        .unwrap();
                    opt.load_state_dict(&sd).unwrap();
                    assert!(!opt.is_train_mode());
                }
                opt.train().unwrap();
            }
            opt.try_step(&grads(&f, "sf_all", t, &w, &b)).unwrap();
        }
        (bits(w.as_tensor()), bits(b.as_tensor()))
    };
    assert_eq!(run(false), run(true), "schedule-free");

    // Lookahead (slow weights and counter; 10 is not a multiple of k = 3).
    let run = |split: bool| {
        let (mut w, mut b) = vars(&f, DType::F32);
        let mut opt = lookahead_new("lookahead_adam", &w, &b);
        for t in 0..20 {
            if split && t == 10 {
                let sd = opt.state();
                w = Var::from_tensor(&w.as_tensor().copy().unwrap()).unwrap();
                b = Var::from_tensor(&b.as_tensor().copy().unwrap()).unwrap();
                opt = lookahead_new("lookahead_adam", &w, &b);
                opt.load(&sd).unwrap();
            }
            opt.step_grads(&grads(&f, "lookahead_adam", t, &w, &b))
                .unwrap();
        }
        (bits(w.as_tensor()), bits(b.as_tensor()))
    };
    assert_eq!(run(false), run(true), "lookahead");

    // SAM: the inner optimizer's state.
    let run = |split: bool| {
        let (mut w, mut b) = vars(&f, DType::F32);
        let make = |w: &Var, b: &Var| {
            let vs = vec![w.clone(), b.clone()];
            let adam = Adam::new(vs.clone(), AdamConfig::default().with_lr(0.01)).unwrap();
            Sam::new(
                adam,
                vs,
                SamConfig::default().with_rho(0.5).with_adaptive(true),
            )
            .unwrap()
        };
        let mut sam = make(&w, &b);
        for t in 0..20 {
            if split && t == 10 {
                let sd = sam.state_dict().unwrap();
                w = Var::from_tensor(&w.as_tensor().copy().unwrap()).unwrap();
                b = Var::from_tensor(&b.as_tensor().copy().unwrap()).unwrap();
                sam = make(&w, &b);
                sam.load_state_dict(&sd).unwrap();
            }
            sam.step(|| sam_loss(&f, &w, &b)).unwrap();
        }
        (bits(w.as_tensor()), bits(b.as_tensor()))
    };
    assert_eq!(run(false), run(true), "sam");
}

// ---------------------------------------------------------------- NaN/Inf guard

fn poisoned(f: &HashMap<String, Tensor>, w: &Var, b: &Var) -> GradStore {
    let mut g = grads(f, "sf", 0, w, b);
    let bad = Tensor::new(&[1.0f32, f32::NAN, 0.0, 1.0, f32::INFINITY], &Device::Cpu).unwrap();
    g.insert(b, bad);
    g
}

#[test]
fn non_finite_gradients_never_reach_the_weights() {
    let f = fixtures();
    // Schedule-free: error and skip.
    for nf in [NonFinite::Error, NonFinite::Skip] {
        let (w, b) = vars(&f, DType::F32);
        let cfg = sf_cfg("sf").with_non_finite(nf);
        let mut opt = ScheduleFreeAdamW::new(vec![w.clone(), b.clone()], cfg).unwrap();
        let before = (bits(w.as_tensor()), bits(b.as_tensor()));
        let r = opt.try_step(&poisoned(&f, &w, &b));
        assert_eq!(r.is_err(), nf == NonFinite::Error);
        assert_eq!((bits(w.as_tensor()), bits(b.as_tensor())), before);
        assert_eq!(opt.steps(), 0);
    }
    // Lookahead: its inner optimizer's guard.
    let (w, b) = vars(&f, DType::F32);
    let mut la = lookahead_new("lookahead_sgd", &w, &b);
    let before = bits(b.as_tensor());
    assert!(la.step_grads(&poisoned(&f, &w, &b)).is_err());
    assert_eq!(bits(b.as_tensor()), before);
    // SAM: a NaN at the perturbed point (the loss blows up there) leaves the weights as they were.
    for nf in [NonFinite::Error, NonFinite::Skip] {
        let p = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let sgd = Sgd::new(vec![p.clone()], SgdConfig::default().with_lr(0.1)).unwrap();
        let cfg = SamConfig::default().with_rho(0.5).with_non_finite(nf);
        let mut sam = Sam::new(sgd, vec![p.clone()], cfg).unwrap();
        let before = bits(p.as_tensor());
        let mut calls = 0;
        let r = sam.step(|| {
            calls += 1;
            let l = p.as_tensor().sqr()?.sum_all()?;
            if calls == 2 {
                l.sqrt()? * f64::NAN
            } else {
                Ok(l)
            }
        });
        assert_eq!(r.is_err(), nf == NonFinite::Error, "{nf:?}");
        assert_eq!(bits(p.as_tensor()), before);
        assert_eq!(sam.skipped_steps(), u64::from(nf == NonFinite::Skip));
    }
    // Muon (and MuonWithAdamW: a NaN on the AdamW side stops the Muon side too).
    let dev = Device::Cpu;
    let m = Var::new(&[[1.0f32, 2.0], [3.0, 4.0]], &dev).unwrap();
    let v = Var::new(&[1.0f32, 2.0], &dev).unwrap();
    let mut opt = <MuonWithAdamW as Optimizer>::new(
        vec![m.clone(), v.clone()],
        (MuonConfig::default(), AdamWConfig::default()),
    )
    .unwrap();
    let mut g = GradStore::default();
    g.insert(&m, m.as_tensor().ones_like().unwrap());
    g.insert(&v, Tensor::new(&[f32::NAN, 0.0], &dev).unwrap());
    let before = (bits(m.as_tensor()), bits(v.as_tensor()));
    assert!(opt.try_step(&g).is_err());
    assert_eq!((bits(m.as_tensor()), bits(v.as_tensor())), before);
}

#[test]
fn wrapper_configs_are_checked() {
    let dev = Device::Cpu;
    let p = || Var::new(&[1.0f32], &dev).unwrap();
    let sgd = |v: &Var| Sgd::new(vec![v.clone()], SgdConfig::default()).unwrap();
    let v = p();
    for cfg in [
        LookaheadConfig::default().with_k(0),
        LookaheadConfig::default().with_alpha(1.5),
        LookaheadConfig::default().with_alpha(f64::NAN),
    ] {
        let e = Lookahead::new(sgd(&v), vec![v.clone()], cfg).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidConfig {
                    block: "Lookahead",
                    ..
                }
            ),
            "{e}"
        );
    }
    for rho in [-0.1, f64::NAN, f64::INFINITY] {
        let e = Sam::new(sgd(&v), vec![v.clone()], SamConfig::default().with_rho(rho)).unwrap_err();
        assert!(
            matches!(e, Error::InvalidConfig { block: "Sam", .. }),
            "{e}"
        );
    }
    for cfg in [
        ScheduleFreeAdamWConfig::default().with_betas(0.0, 0.999),
        ScheduleFreeAdamWConfig::default().with_betas(0.9, 1.0),
        ScheduleFreeAdamWConfig::default().with_r(-1.0),
        ScheduleFreeAdamWConfig::default().with_weight_lr_power(f64::NAN),
        ScheduleFreeAdamWConfig::default().with_eps(0.0),
    ] {
        let e = ScheduleFreeAdamW::new(vec![p()], cfg).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidConfig {
                    block: "ScheduleFreeAdamW",
                    ..
                }
            ),
            "{e}"
        );
    }
    let f64_var = Var::new(&[1.0f64], &dev).unwrap();
    let e = Lookahead::new(sgd(&v), vec![f64_var], LookaheadConfig::default()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnsupportedDType {
                block: "Lookahead",
                ..
            }
        ),
        "{e}"
    );
}
