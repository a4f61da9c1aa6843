//! Bad input for `tune::nas` and `train::lr_finder`: empty spaces, dimensions without choices,
//! out-of-range genomes, populations and tournaments of impossible sizes, budgets below the
//! population, failing closures; learning-rate ranges that are empty or not positive, too few
//! iterations, out-of-range smoothing and divergence factors, non-scalar and NaN losses, and a
//! huge iteration count (which must not be allocated up front).

use super::*;
use candle_tricks::train::lr_finder::{lr_range_test, LrRangeTestConfig, LrStop};
use candle_tricks::tune::nas::{
    random_search, regularized_evolution, ArchSpace, EvolutionConfig, Genome,
};

fn space() -> ArchSpace {
    ArchSpace::new([("block", 3), ("width", 4)]).unwrap()
}

/// A score that is fine for every genome.
fn score(g: &Genome) -> candle_tricks::Result<f64> {
    Ok(g.choices().iter().sum::<usize>() as f64)
}

pub(super) fn nas_cases() -> Vec<Case> {
    let mut c = Cases::new("nas");
    c.err("ArchSpace::new(no dimension)", "ArchSpace", || {
        ArchSpace::new(Vec::<(String, usize)>::new())?;
        Ok(())
    });
    c.err(
        "ArchSpace::new(a dimension with 0 choices)",
        "ArchSpace",
        || {
            ArchSpace::new([("block", 3), ("width", 0)])?;
            Ok(())
        },
    );
    c.err("ArchSpace::new(duplicate names)", "ArchSpace", || {
        ArchSpace::new([("block", 3), ("block", 2)])?;
        Ok(())
    });
    c.err("ArchSpace::genome(too few indices)", "ArchSpace", || {
        space().genome(vec![1])?;
        Ok(())
    });
    c.err("ArchSpace::genome(index out of range)", "ArchSpace", || {
        space().genome(vec![3, 0])?;
        Ok(())
    });
    c.val("ArchSpace of usize::MAX² architectures", || {
        let huge = ArchSpace::new([("a", usize::MAX), ("b", usize::MAX), ("c", usize::MAX)])?;
        if huge.size().is_some() {
            return Err(Got::Wrong("size did not report the overflow".into()));
        }
        let h = random_search(&huge, 3, 0, |_| Ok(1.0))?;
        if h.trials().len() != 3 {
            return Err(Got::Wrong(format!("{} trials", h.trials().len())));
        }
        Ok(())
    });
    let base = EvolutionConfig::default()
        .with_population(4)
        .with_sample_size(2)
        .with_budget(10);
    for (name, cfg) in [
        ("population 0", base.with_population(0)),
        ("population 1", base.with_population(1).with_sample_size(1)),
        ("sample_size 0", base.with_sample_size(0)),
        ("sample_size > population", base.with_sample_size(5)),
        ("budget < population", base.with_budget(3)),
        ("budget 0", base.with_budget(0)),
    ] {
        c.err(
            &format!("regularized_evolution({name})"),
            "EvolutionConfig",
            move || {
                let mut calls = 0;
                let r = regularized_evolution(&space(), &cfg, |g| {
                    calls += 1;
                    score(g)
                });
                if calls != 0 {
                    return Err(Got::Wrong(format!("{calls} evaluations before the error")));
                }
                r?;
                Ok(())
            },
        );
    }
    c.err(
        "regularized_evolution(no dimension with 2 choices)",
        "regularized_evolution",
        move || {
            let single = ArchSpace::new([("a", 1), ("b", 1)])?;
            regularized_evolution(&single, &base, score)?;
            Ok(())
        },
    );
    c.err("random_search(budget 0)", "random_search", || {
        random_search(&space(), 0, 0, score)?;
        Ok(())
    });
    c.val(
        "regularized_evolution(closure always fails: Err, NaN, -inf)",
        move || {
            let mut k = 0;
            let h = regularized_evolution(&space(), &base, |_| {
                k += 1;
                match k % 3 {
                    0 => Err(candle_tricks::Error::config("train", "diverged")),
                    1 => Ok(f64::NAN),
                    _ => Ok(f64::NEG_INFINITY),
                }
            })?;
            if h.failures() != 10 || h.best().is_some() || h.best_so_far()[9].is_some() {
                return Err(Got::Wrong(format!(
                    "{} failures, best {:?}",
                    h.failures(),
                    h.best()
                )));
            }
            Ok(())
        },
    );
    c.list
}

pub(super) fn lr_finder_cases() -> Vec<Case> {
    let mut c = Cases::new("lr_finder");
    let base = LrRangeTestConfig::default()
        .with_start_lr(1e-3)
        .with_end_lr(1.0)
        .with_num_iters(20);
    let run = |cfg: LrRangeTestConfig| -> Res {
        let w = Var::new(&[1f32], &cpu())?;
        let mut sgd = candle_nn::SGD::new(vec![w.clone()], 0.1)?;
        lr_range_test(
            std::slice::from_ref(&w),
            &mut sgd,
            |_| w.as_tensor().sqr()?.sum_all(),
            &cfg,
        )?;
        Ok(())
    };
    for (name, cfg) in [
        ("start_lr 0", base.with_start_lr(0.0)),
        ("start_lr -1", base.with_start_lr(-1.0)),
        ("start_lr NaN", base.with_start_lr(f64::NAN)),
        ("start_lr = end_lr", base.with_start_lr(1.0)),
        ("start_lr > end_lr", base.with_start_lr(2.0)),
        ("end_lr inf", base.with_end_lr(f64::INFINITY)),
        ("num_iters 0", base.with_num_iters(0)),
        ("num_iters 1", base.with_num_iters(1)),
        ("beta 1", base.with_beta(1.0)),
        ("beta -0.1", base.with_beta(-0.1)),
        ("beta NaN", base.with_beta(f64::NAN)),
        ("diverge_th 1", base.with_diverge_th(1.0)),
        ("diverge_th NaN", base.with_diverge_th(f64::NAN)),
    ] {
        c.err(
            &format!("lr_range_test({name})"),
            "LrRangeTestConfig",
            move || run(cfg),
        );
    }
    c.err("lr_range_test(no vars)", "lr_range_test", move || {
        let w = Var::new(&[1f32], &cpu())?;
        let mut sgd = candle_nn::SGD::new(vec![w.clone()], 0.1)?;
        lr_range_test(&[], &mut sgd, |_| w.as_tensor().sum_all(), &base)?;
        Ok(())
    });
    c.err("lr_range_test(vector loss)", "lr_range_test", move || {
        let w = Var::new(&[1f32, 2.0], &cpu())?;
        let mut sgd = candle_nn::SGD::new(vec![w.clone()], 0.1)?;
        lr_range_test(
            std::slice::from_ref(&w),
            &mut sgd,
            |_| w.as_tensor().sqr(),
            &base,
        )?;
        Ok(())
    });
    c.val(
        "lr_range_test(num_iters usize::MAX, NaN loss at 3)",
        move || {
            let w = Var::new(&[1f32], &cpu())?;
            let mut sgd = candle_nn::SGD::new(vec![w.clone()], 0.1)?;
            let loss = |i: usize| {
                let l = w.as_tensor().sqr()?.sum_all()?;
                if i == 3 {
                    l.affine(f64::NAN, 0.0)
                } else {
                    Ok(l)
                }
            };
            let curve = lr_range_test(
                std::slice::from_ref(&w),
                &mut sgd,
                loss,
                &base.with_num_iters(usize::MAX),
            )?;
            let restored = w.as_tensor().to_vec1::<f32>()? == [1.0];
            if curve.stop != (LrStop::NonFiniteLoss { iteration: 3 }) || !restored {
                return Err(Got::Wrong(format!(
                    "stop {:?}, weights restored {restored}",
                    curve.stop
                )));
            }
            Ok(())
        },
    );
    c.list
}
