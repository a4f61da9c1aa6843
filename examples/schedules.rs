//! Every learning-rate schedule of `candle_tricks::schedule`, tabulated and plotted.
//!
//! ```sh
//! cargo run --release --example schedules
//! ```
//!
//! Prints each schedule's rate at a few steps and writes one SVG per schedule plus
//! `overview.svg` into `docs/schedules/` (hand-written SVG polylines, no plotting dependency).
//!
//! Template for a training loop (copy this): build the schedule once, wrap it in a
//! [`Scheduler`], call `step` once per optimizer step *before* `opt.step`, and save its state
//! with the optimizer's:
//!
//! ```ignore
//! let schedule = Warmup::new(CosineAnnealing::new(3e-4, total - warmup)?.with_eta_min(3e-5)?, warmup, 0.0)?;
//! let mut sched = Scheduler::new(schedule);
//! for batch in batches {
//!     let loss = model.forward(&batch)?.loss()?;
//!     let mut grads = loss.backward()?;
//!     let norm = clip_grad_norm(&mut grads, &vars, 1.0)?; // log it
//!     sched.step(&mut opt)?;                              // or step_with_momentum (one-cycle)
//!     opt.step(&grads)?;
//! }
//! let mut state = sched.state_dict()?;                    // {"scheduler.step": 0-d f64}
//! // state.extend(optimizer_state); candle_core::safetensors::save(&state, "ckpt.safetensors")?;
//! ```
//!
//! For [`ReduceLrOnPlateau`], call `step_optimizer(val_loss, &mut opt)` once per evaluation
//! instead.

// mimalloc with freed memory kept mapped (README, "allocator" tip): training steps free and
// reallocate the same large temporaries every iteration. One module, shared with the benches.
#[path = "../benches/common/alloc.rs"]
mod alloc;

use std::fmt::Write as _;
use std::path::Path;

use candle_tricks::schedule::*;
use candle_tricks::Result;

const STEPS: usize = 1000;
const COLORS: [&str; 2] = ["#1f77b4", "#d62728"];

/// One plotted schedule: its rates (and momenta, for one-cycle) over `STEPS` steps.
struct Curve {
    file: &'static str,
    title: String,
    lr: Vec<f64>,
    momentum: Option<Vec<f64>>,
}

fn curve(file: &'static str, title: &str, s: &dyn LrSchedule) -> Curve {
    let momentum = s
        .momentum(0)
        .map(|_| (0..STEPS).map(|t| s.momentum(t).unwrap_or(0.0)).collect());
    Curve {
        file,
        title: title.to_string(),
        lr: (0..STEPS).map(|t| s.lr(t)).collect(),
        momentum,
    }
}

fn curves() -> Result<Vec<Curve>> {
    let peak = 0.1;
    let mut out = vec![
        curve("constant", "Constant(0.1)", &Constant::new(peak)?),
        curve(
            "step",
            "StepLr(step 250, γ 0.5)",
            &StepLr::new(peak, 250, 0.5)?,
        ),
        curve(
            "multistep",
            "MultiStepLr([300, 600, 900], γ 0.1)",
            &MultiStepLr::new(peak, [300, 600, 900], 0.1)?,
        ),
        curve(
            "exponential",
            "ExponentialLr(γ 0.996)",
            &ExponentialLr::new(peak, 0.996)?,
        ),
        curve(
            "polynomial",
            "Polynomial(T 1000, power 2, end 0.01)",
            &Polynomial::new(peak, STEPS, 2.0)?.with_end_lr(0.01)?,
        ),
        curve(
            "cosine",
            "CosineAnnealing(T_max 1000, eta_min 0.005)",
            &CosineAnnealing::new(peak, STEPS)?.with_eta_min(0.005)?,
        ),
        curve(
            "warm_restarts",
            "CosineWarmRestarts(T_0 100, T_mult 2) — SGDR",
            &CosineWarmRestarts::new(peak, 100, 2)?,
        ),
        curve(
            "warmup_cosine",
            "Warmup(100 steps) + CosineAnnealing(900)",
            &Warmup::new(
                CosineAnnealing::new(peak, 900)?.with_eta_min(0.005)?,
                100,
                0.0,
            )?,
        ),
        curve(
            "one_cycle",
            "OneCycle(cos), rate and momentum",
            &OneCycle::new(OneCycleConfig::new(peak, STEPS))?,
        ),
        curve(
            "one_cycle_three_phase",
            "OneCycle(linear, three phases)",
            &OneCycle::new(
                OneCycleConfig::new(peak, STEPS)
                    .with_anneal(Anneal::Linear)
                    .with_three_phase(true),
            )?,
        ),
        curve(
            "noam",
            "Noam(d_model 512, warmup 100, factor 2)",
            &Noam::new(512, 100)?.with_factor(2.0)?,
        ),
    ];
    for (file, title, decay) in [
        (
            "wsd_linear",
            "Wsd(warmup 50, decay 20 %, linear)",
            WsdDecay::Linear,
        ),
        (
            "wsd_cosine",
            "Wsd(warmup 50, decay 20 %, cosine)",
            WsdDecay::Cosine,
        ),
        (
            "wsd_1_sqrt",
            "Wsd(warmup 50, decay 20 %, 1 − sqrt)",
            WsdDecay::OneMinusSqrt,
        ),
    ] {
        let cfg = WsdConfig::from_fraction(peak, STEPS, 50, 0.2)?
            .with_decay(decay)
            .with_min_lr_ratio(0.01);
        out.push(curve(file, title, &Wsd::new(cfg)?));
    }
    out.push(curve(
        "sequential",
        "Sequential[Constant, Exponential, Cosine] at 200, 500",
        &Sequential::new(
            vec![
                Box::new(Constant::new(0.02)?),
                Box::new(ExponentialLr::new(peak, 0.995)?),
                Box::new(CosineAnnealing::new(0.05, 500)?),
            ],
            vec![200, 500],
        )?,
    ));
    let cyclic = |mode| CyclicLrConfig::new(0.01, peak, 100).with_mode(mode);
    out.extend([
        curve(
            "cyclic_triangular",
            "CyclicLr(triangular, up 100), rate and momentum",
            &CyclicLr::new(cyclic(CyclicMode::Triangular))?,
        ),
        curve(
            "cyclic_triangular2",
            "CyclicLr(triangular2, up 100, down 150)",
            &CyclicLr::new(cyclic(CyclicMode::Triangular2).with_step_size_down(150))?,
        ),
        curve(
            "cyclic_exp_range",
            "CyclicLr(exp_range γ 0.998, up 50)",
            &CyclicLr::new(
                CyclicLrConfig::new(0.01, peak, 50)
                    .with_mode(CyclicMode::ExpRange { gamma: 0.998 })
                    .without_momentum(),
            )?,
        ),
        curve(
            "optax_linear_onecycle",
            "PhasedOneCycle::linear_onecycle (optax, T 900)",
            &PhasedOneCycle::linear_onecycle(900, peak, 0.3, 0.85, 25.0, 1e4)?,
        ),
        curve(
            "optax_cosine_onecycle",
            "PhasedOneCycle::cosine_onecycle (optax, T 900)",
            &PhasedOneCycle::cosine_onecycle(900, peak, 0.3, 25.0, 1e4)?,
        ),
        curve(
            "chained",
            "Chained[Warmup 100, StepLr(300, 0.5), Exponential(0.999)]",
            &Chained::new(
                peak,
                vec![
                    Box::new(Warmup::new(Constant::new(1.0)?, 100, 0.0)?),
                    Box::new(StepLr::new(1.0, 300, 0.5)?),
                    Box::new(ExponentialLr::new(1.0, 0.999)?),
                ],
            )?,
        ),
    ]);
    // Plateau: stateful, driven by a synthetic validation loss that flattens out.
    let mut p = ReduceLrOnPlateau::new(
        peak,
        PlateauConfig::default()
            .with_factor(0.5)
            .with_patience(40)
            .with_cooldown(20),
    )?;
    let lr = (0..STEPS)
        .map(|t| {
            let t = t as f64;
            let loss = 1.0 / (1.0 + t / 50.0).sqrt() + 0.02 * (t * 0.7).sin();
            p.step(loss.max(0.35))
        })
        .collect();
    out.push(Curve {
        file: "plateau",
        title: "ReduceLrOnPlateau(factor 0.5, patience 40, cooldown 20)".into(),
        lr,
        momentum: None,
    });
    Ok(out)
}

/// Polyline points of `v` in the box (x0, y0, w, h), scaled so `lo..top` fills the box; points within 0.2 px
/// of the straight segment that skips them are dropped to keep the files small.
fn points(v: &[f64], (lo, top): (f64, f64), (x0, y0, w, h): (f64, f64, f64, f64)) -> String {
    let n = (v.len() - 1).max(1) as f64;
    let xy: Vec<(f64, f64)> = v
        .iter()
        .enumerate()
        .map(|(i, &y)| {
            let py = y0 + h * (1.0 - ((y - lo) / (top - lo)).clamp(0.0, 1.0));
            (x0 + w * i as f64 / n, py)
        })
        .collect();
    // Greedy: extend the current segment while every point it skips stays within 0.2 px of it.
    let dist = |a: (f64, f64), c: (f64, f64), b: (f64, f64)| {
        let (dx, dy) = (c.0 - a.0, c.1 - a.1);
        ((b.0 - a.0) * dy - (b.1 - a.1) * dx).abs() / (dx * dx + dy * dy).sqrt().max(1e-9)
    };
    let mut kept = vec![xy[0]];
    let mut start = 0;
    for end in 2..xy.len() {
        if xy[start + 1..end]
            .iter()
            .any(|&b| dist(xy[start], xy[end], b) > 0.2)
        {
            start = end - 1;
            kept.push(xy[start]);
        }
    }
    kept.push(xy[xy.len() - 1]);
    let mut s = String::new();
    for (px, py) in kept {
        let _ = write!(s, "{px:.1},{py:.1} ");
    }
    s
}

/// One plot panel: frame, rate curve (and momentum, dashed, on its own 0.8–1.0 axis), labels.
fn panel(svg: &mut String, c: &Curve, (x0, y0, w, h): (f64, f64, f64, f64), font: f64) {
    let top = c.lr.iter().cloned().fold(0.0, f64::max) * 1.05;
    let _ = write!(
        svg,
        r##"<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="#fff" stroke="#999"/>
<text x="{tx}" y="{ty}" font-size="{font}" font-family="sans-serif">{title}</text>
<text x="{lx}" y="{ly0}" font-size="{fs}" text-anchor="end" font-family="sans-serif">{top:.3}</text>
<text x="{lx}" y="{ly1}" font-size="{fs}" text-anchor="end" font-family="sans-serif">0</text>
<text x="{x0}" y="{bx}" font-size="{fs}" font-family="sans-serif">0</text>
<text x="{rx}" y="{bx}" font-size="{fs}" text-anchor="end" font-family="sans-serif">{steps}</text>
<polyline fill="none" stroke="{c0}" stroke-width="1.5" points="{pts}"/>
"##,
        tx = x0,
        ty = y0 - 6.0,
        title = c.title,
        lx = x0 - 4.0,
        ly0 = y0 + font * 0.7,
        ly1 = y0 + h,
        fs = font * 0.8,
        bx = y0 + h + font,
        rx = x0 + w,
        steps = c.lr.len(),
        c0 = COLORS[0],
        pts = points(&c.lr, (0.0, top), (x0, y0, w, h)),
    );
    if let Some(m) = &c.momentum {
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="{c1}" stroke-width="1.2" stroke-dasharray="4 3" points="{pts}"/>
<text x="{mx}" y="{my}" font-size="{fs}" text-anchor="end" fill="{c1}" font-family="sans-serif">momentum, dashed (axis 0.8–1.0)</text>
"##,
            c1 = COLORS[1],
            pts = points(m, (0.8, 1.0), (x0, y0, w, h)),
            mx = x0 + w - 4.0,
            my = y0 + h - 4.0,
            fs = font * 0.8,
        );
    }
}

fn svg_doc(w: f64, h: f64, body: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#fafafa\"/>\n{body}</svg>\n"
    )
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let curves = curves()?;
    let marks = [0usize, 10, 50, 100, 250, 500, 750, 999];
    print!("{:<24}", "schedule \\ step");
    for m in marks {
        print!("{m:>11}");
    }
    println!();
    for c in &curves {
        print!("{:<24}", c.file);
        for m in marks {
            print!("{:>11.3e}", c.lr[m]);
        }
        println!();
    }

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schedules");
    std::fs::create_dir_all(&dir)?;
    for c in &curves {
        let mut body = String::new();
        panel(&mut body, c, (60.0, 36.0, 560.0, 240.0), 14.0);
        std::fs::write(
            dir.join(format!("{}.svg", c.file)),
            svg_doc(640.0, 310.0, &body),
        )?;
    }
    let cols = 4;
    let rows = curves.len().div_ceil(cols);
    let (pw, ph) = (300.0, 150.0);
    let mut body = String::new();
    for (i, c) in curves.iter().enumerate() {
        let x = 50.0 + (i % cols) as f64 * (pw + 60.0);
        let y = 30.0 + (i / cols) as f64 * (ph + 55.0);
        panel(&mut body, c, (x, y, pw, ph), 10.0);
    }
    let (w, h) = (
        cols as f64 * (pw + 60.0) + 20.0,
        rows as f64 * (ph + 55.0) + 20.0,
    );
    std::fs::write(dir.join("overview.svg"), svg_doc(w, h, &body))?;
    println!("\nwrote {} SVGs to {}", curves.len() + 1, dir.display());
    Ok(())
}
