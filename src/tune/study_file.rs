//! Saving a [`Study`] to a plain-text file and resuming it.
//!
//! # Format (version 1)
//! UTF-8 lines of tab-separated fields; inside a field a backslash escapes itself, a tab (`\t`),
//! a newline (`\n`) and a carriage return (`\r`). Numbers are written in Rust's shortest form
//! that parses back to the same `f64`, so a resumed study sees bit-identical values.
//!
//! ```text
//! candle-tricks study v1
//! direction  minimize | maximize
//! dim        NAME  uniform | log-uniform  LOW  HIGH
//! dim        NAME  int | log-int  LOW  HIGH
//! dim        NAME  categorical  CHOICE…
//! if         NAME  PARENT  VALUE…            (after its dim line, for a conditional one)
//! trial      NUMBER  STATE  RESULT  POINT  RUNGS  CURVE  CONFIG
//! end        NUMBER-OF-TRIALS
//! ```
//!
//! In a trial line, `STATE` is `complete`, `pruned` or `failed`; `RESULT` is the score, the
//! `STEP:VALUE` of the last report, or the failure's message; `POINT` and `RUNGS` are
//! space-separated numbers, `CURVE` space-separated `STEP:VALUE` pairs, and `CONFIG` the
//! configuration as [`crate::tune::Config`] displays it (for a reader; checked on load). The
//! `end` line catches a truncated file.
//!
//! # Example
//! ```
//! use candle_tricks::tune::{Direction, RandomSampler, Space, Study};
//! # fn main() -> candle_tricks::Result<()> {
//! let space = || Space::builder().uniform("x", -1.0, 1.0).build();
//! let path = std::env::temp_dir().join("candle_tricks_study_doc.txt");
//! let objective = |cfg: &candle_tricks::tune::Config| Ok(cfg.f64("x")?.powi(2));
//! let mut study = Study::new(space()?, Direction::Minimize, Box::new(RandomSampler::new(1)));
//! study.optimize(3, objective)?;
//! study.save(&path)?;
//! let mut resumed = Study::load(&path, space()?, Box::new(RandomSampler::new(1)))?;
//! resumed.optimize(2, objective)?;
//! study.optimize(2, objective)?; // the same as never stopping
//! assert_eq!(resumed.trials(), study.trials());
//! # std::fs::remove_file(&path).ok();
//! # Ok(())
//! # }
//! ```

use std::fmt::Write as _;
use std::path::Path;

use crate::tune::sampler::Sampler;
use crate::tune::space::{Domain, Space};
use crate::tune::study::{Direction, Outcome, Study, Trial};
use crate::{Error, Result};

const BLOCK: &str = "Study";
const MAGIC: &str = "candle-tricks study v1";

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
}

fn line(fields: &[String]) -> String {
    let mut s = fields
        .iter()
        .map(|f| escape(f))
        .collect::<Vec<_>>()
        .join("\t");
    s.push('\n');
    s
}

fn join<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `dim` and `if` lines that describe `space`.
fn space_lines(space: &Space) -> Vec<String> {
    let mut lines = Vec::new();
    for d in space.dims() {
        let mut f = vec!["dim".to_string(), d.name.clone()];
        match &d.domain {
            Domain::Uniform { low, high } => {
                f.extend(["uniform".into(), low.to_string(), high.to_string()])
            }
            Domain::LogUniform { low, high } => {
                f.extend(["log-uniform".into(), low.to_string(), high.to_string()])
            }
            Domain::Int { low, high, log } => f.extend([
                if *log { "log-int" } else { "int" }.into(),
                low.to_string(),
                high.to_string(),
            ]),
            Domain::Categorical(choices) => {
                f.push("categorical".into());
                f.extend(choices.iter().cloned());
            }
        }
        lines.push(line(&f));
        if let Some(c) = &d.condition {
            let mut f = vec!["if".to_string(), d.name.clone(), c.parent.clone()];
            f.extend(c.values.iter().cloned());
            lines.push(line(&f));
        }
    }
    lines
}

fn trial_line(t: &Trial) -> String {
    let (state, result) = match &t.outcome {
        Outcome::Complete { value } => ("complete", value.to_string()),
        Outcome::Pruned { step, value } => ("pruned", format!("{step}:{value}")),
        Outcome::Failed { message } => ("failed", message.clone()),
    };
    line(&[
        "trial".into(),
        t.number.to_string(),
        state.into(),
        result,
        join(&t.point),
        join(&t.rungs),
        join(t.curve.iter().map(|(s, v)| format!("{s}:{v}"))),
        t.config.to_string(),
    ])
}

impl Study {
    /// The study as the text of its file (see the module docs).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        s.push_str(MAGIC);
        s.push('\n');
        let direction = match self.direction {
            Direction::Minimize => "minimize",
            Direction::Maximize => "maximize",
        };
        s.push_str(&line(&["direction".into(), direction.into()]));
        for l in space_lines(&self.space) {
            s.push_str(&l);
        }
        for t in &self.trials {
            s.push_str(&trial_line(t));
        }
        // Writing to a String cannot fail.
        let _ = writeln!(s, "end\t{}", self.trials.len());
        s
    }

    /// Writes the study to `path` (the format of the module docs), replacing the file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_text())
            .map_err(|e| Error::config(BLOCK, format!("cannot write {}: {e}", path.display())))
    }

    /// Reads a study saved by [`Study::save`] and resumes it with `sampler`, which is first
    /// replayed over the saved trials (asked for each point with the history it had then) so a
    /// seeded sampler continues exactly where the saved run stopped. `space` must be the one
    /// the study was saved with; the pruner is not saved (add it again with
    /// [`Study::with_pruner`]; the rung values it needs are).
    pub fn load(path: impl AsRef<Path>, space: Space, sampler: Box<dyn Sampler>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(BLOCK, format!("cannot read {}: {e}", path.display())))?;
        Self::from_text(&text, space, sampler)
    }

    /// [`Study::load`] from the text of a file.
    pub fn from_text(text: &str, space: Space, sampler: Box<dyn Sampler>) -> Result<Self> {
        let corrupt = |n: usize, msg: String| {
            Error::config(
                BLOCK,
                format!("cannot load the study (line {}): {msg}", n + 1),
            )
        };
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, MAGIC)) => {}
            Some((n, l)) => return Err(corrupt(n, format!("expected `{MAGIC}`, got `{l}`"))),
            None => return Err(corrupt(0, "the file is empty".into())),
        }
        let direction = match lines.next() {
            Some((_, "direction\tminimize")) => Direction::Minimize,
            Some((_, "direction\tmaximize")) => Direction::Maximize,
            Some((n, l)) => return Err(corrupt(n, format!("expected the direction, got `{l}`"))),
            None => return Err(corrupt(1, "missing the direction".into())),
        };
        let expected_space = space_lines(&space);
        for want in &expected_space {
            match lines.next() {
                Some((_, l)) if l == want.trim_end_matches('\n') => {}
                Some((n, l)) => {
                    return Err(corrupt(
                        n,
                        format!(
                            "the saved space does not match: file has `{l}`, the space `{}`",
                            want.trim_end()
                        ),
                    ))
                }
                None => return Err(corrupt(2, "the file ends inside the space".into())),
            }
        }
        let mut study = Study::new(space, direction, sampler);
        let mut ended = false;
        for (n, l) in lines {
            if ended {
                return Err(corrupt(n, format!("unexpected line after `end`: `{l}`")));
            }
            let fields = l
                .split('\t')
                .map(unescape)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| corrupt(n, "a bad escape sequence".into()))?;
            match fields.first().map(String::as_str) {
                Some("trial") => {
                    let trial = study
                        .parse_trial(&fields)
                        .map_err(|msg| corrupt(n, msg))?;
                    study.replay_and_record(trial)?;
                }
                Some("end") if fields.len() == 2 => {
                    if fields[1] != study.trials.len().to_string() {
                        return Err(corrupt(
                            n,
                            format!(
                                "`end` counts {} trials, the file has {}",
                                fields[1],
                                study.trials.len()
                            ),
                        ));
                    }
                    ended = true;
                }
                _ => {
                    return Err(corrupt(
                        n,
                        format!("expected a trial or the end (or a space line matching the space), got `{l}`"),
                    ))
                }
            }
        }
        if !ended {
            return Err(corrupt(
                text.lines().count(),
                "missing the `end` line (a truncated file?)".into(),
            ));
        }
        Ok(study)
    }

    /// Parses a `trial` line's fields against this study's space.
    fn parse_trial(&self, f: &[String]) -> std::result::Result<Trial, String> {
        if f.len() != 8 {
            return Err(format!("expected 8 fields in a trial, got {}", f.len()));
        }
        let number: usize = f[1]
            .parse()
            .map_err(|_| format!("bad trial number `{}`", f[1]))?;
        if number != self.trials.len() {
            return Err(format!(
                "expected trial {}, got trial {number}",
                self.trials.len()
            ));
        }
        let num = |s: &str| {
            s.parse::<f64>()
                .map_err(|_| format!("bad number `{s}` in trial {number}"))
        };
        let nums = |s: &str| -> std::result::Result<Vec<f64>, String> {
            s.split(' ').filter(|x| !x.is_empty()).map(num).collect()
        };
        let step_value = |s: &str| -> std::result::Result<(u64, f64), String> {
            let (a, b) = s
                .split_once(':')
                .ok_or_else(|| format!("expected STEP:VALUE in trial {number}, got `{s}`"))?;
            let step = a
                .parse()
                .map_err(|_| format!("bad step `{a}` in trial {number}"))?;
            Ok((step, num(b)?))
        };
        let outcome = match f[2].as_str() {
            "complete" => Outcome::Complete { value: num(&f[3])? },
            "pruned" => {
                let (step, value) = step_value(&f[3])?;
                Outcome::Pruned { step, value }
            }
            "failed" => Outcome::Failed {
                message: f[3].clone(),
            },
            s => return Err(format!("unknown trial state `{s}`")),
        };
        if let Outcome::Complete { value } | Outcome::Pruned { value, .. } = outcome {
            if !value.is_finite() {
                return Err(format!("trial {number} has the non-finite value {value}"));
            }
        }
        let point = nums(&f[4])?;
        let config = self
            .space
            .config(&point)
            .map_err(|e| format!("trial {number}: {e}"))?;
        if config.to_string() != f[7] {
            return Err(format!(
                "trial {number} decodes to `{config}`, the file says `{}`",
                f[7]
            ));
        }
        let curve = f[6]
            .split(' ')
            .filter(|x| !x.is_empty())
            .map(step_value)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let rungs = nums(&f[5])?;
        if rungs.iter().any(|v| !v.is_finite()) {
            return Err(format!("trial {number} has a non-finite rung value"));
        }
        Ok(Trial {
            number,
            config,
            point,
            outcome,
            curve,
            rungs,
        })
    }

    /// Asks the sampler for the trial's point with the history it had then (advancing a seeded
    /// sampler's state), then records the saved trial.
    fn replay_and_record(&mut self, trial: Trial) -> Result<()> {
        self.sampler.suggest(self.space.len(), &self.history)?;
        self.record(trial);
        Ok(())
    }
}
