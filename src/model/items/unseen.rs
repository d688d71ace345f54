//! The rows of the items never seen in training: how [`ItemTable::redraw_unseen_rows`] draws
//! them afresh after training ([`UnseenRowDraw`]), the record of the draw each domain got, and
//! the learned part an item added after training shares with them.

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::ItemTable;
use crate::data::DomainId;
use crate::error::{Error, Result};

/// How [`ItemTable::redraw_unseen_rows`] draws the rows of the items never seen in training.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UnseenRowDraw {
    /// As at initialisation: N(0, (scale / sqrt(dim))^2) per coordinate, a direction that
    /// owes nothing to training.
    Initial {
        /// The initial scale (`ModelConfig::id_row_init`).
        scale: f64,
    },
    /// Like the domain's trained rows: their mean plus a deviation with their covariance (the
    /// mean of [`TRAINED_ROW_DONORS`] trained rows' deviations, scaled by the square root of
    /// their number), each trained item weighted by `c_i^popularity`, `c_i` its training
    /// interactions: 0 draws an item like any trained item of the catalogue (as the sampled
    /// negatives are), 1 like a training target. A domain without trained items keeps its
    /// rows.
    Trained {
        /// The exponent of the training counts in the weights, 0 or more.
        popularity: f64,
    },
    /// The domain's mean trained row, each trained item weighted by `c_i^popularity`, the same
    /// row for every never-seen item of the domain: for title rows, whose mapped titles tell
    /// those items apart (a typical learned part without a random deviation, so the titles
    /// alone order them). Without title rows every such item ties with the others.
    Mean {
        /// The exponent of the training counts in the weights, 0 or more.
        popularity: f64,
    },
}

/// How many trained rows' deviations make one [`UnseenRowDraw::Trained`] row.
pub const TRAINED_ROW_DONORS: usize = 8;

impl UnseenRowDraw {
    /// An error unless the scale is positive or the popularity exponent finite and not
    /// negative.
    pub fn validate(&self) -> Result<()> {
        match *self {
            UnseenRowDraw::Initial { scale } if !(scale.is_finite() && scale > 0.0) => {
                Err(Error::Config(format!(
                    "redrawing unseen rows: init scale {scale} must be positive"
                )))
            }
            UnseenRowDraw::Trained { popularity } | UnseenRowDraw::Mean { popularity }
                if !(popularity.is_finite() && popularity >= 0.0) =>
            {
                Err(Error::Config(format!(
                    "redrawing unseen rows: popularity exponent {popularity} must be finite, 0 or more"
                )))
            }
            _ => Ok(()),
        }
    }

    /// How far the draw leans towards the domain's popular items: below every other draw for
    /// [`UnseenRowDraw::Initial`] (a direction that owes nothing to training), else the
    /// popularity exponent. The never-seen items' expected rank rises with it, and so does
    /// what they take from the other targets.
    pub fn lean(&self) -> f64 {
        match *self {
            UnseenRowDraw::Initial { .. } => -1.0,
            UnseenRowDraw::Trained { popularity } | UnseenRowDraw::Mean { popularity } => {
                popularity
            }
        }
    }
}

impl std::fmt::Display for UnseenRowDraw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnseenRowDraw::Initial { scale } => write!(f, "initial (scale {scale})"),
            UnseenRowDraw::Trained { popularity } => {
                write!(f, "like trained rows (popularity {popularity})")
            }
            UnseenRowDraw::Mean { popularity } => {
                write!(f, "the mean trained row (popularity {popularity})")
            }
        }
    }
}

/// The trained items among `items` (global ids, `log_counts` their `ln(1 + c_i)`) and their
/// weights `c_i^popularity`.
fn weighted_trained_items(
    items: std::ops::Range<usize>,
    popularity: f64,
    log_counts: &[f32],
) -> Vec<(usize, f64)> {
    items
        .filter(|&i| log_counts[i] > 0.0)
        // c_i = e^ln(1+c_i) - 1, a whole count.
        .map(|i| {
            (
                i,
                f64::from(log_counts[i].exp_m1()).round().powf(popularity),
            )
        })
        .collect()
}

/// The mean of the rows of `trained` (items and weights summing to `total`) in the `q`-wide
/// row-major table `values`.
fn weighted_mean_row(trained: &[(usize, f64)], total: f64, q: usize, values: &[f32]) -> Vec<f64> {
    let mut mean = vec![0.0; q];
    for &(i, w) in trained {
        for (m, &v) in mean.iter_mut().zip(&values[i * q..(i + 1) * q]) {
            *m += w / total * f64::from(v);
        }
    }
    mean
}

impl ItemTable {
    /// Gives every item never seen in training a fresh learned row, drawn as `draw` says (from
    /// `seed`), in place of the row training left it: a row that was only ever a sampled
    /// negative points away from every history ("never a target") and ranks the item last,
    /// below a random order; a fresh row gives it a score that says nothing either way. With
    /// title rows the drawn row is the learned part, added to the item's mapped title as
    /// every learned row is (a `Trained` draw matches the trained items' learned parts); it
    /// shows only in a domain whose rows are used whole, since the row shrinkage drops an
    /// unseen item's learned part. Returns how many rows were drawn. An error with learned
    /// unseen-item rows (they stand in for these items already) or with a draw whose
    /// parameters are out of range. The same as [`Self::redraw_domain_unseen_rows`] for each
    /// domain.
    pub fn redraw_unseen_rows(&mut self, draw: UnseenRowDraw, seed: u64) -> Result<usize> {
        self.redraw_unseen_rows_in(&DomainId::BOTH, draw, seed)
    }

    /// [`Self::redraw_unseen_rows`] for the items of domain `d` alone; a domain's rows come
    /// from a stream of `seed` of their own, so they do not depend on the other domain's draw.
    pub fn redraw_domain_unseen_rows(
        &mut self,
        d: DomainId,
        draw: UnseenRowDraw,
        seed: u64,
    ) -> Result<usize> {
        self.redraw_unseen_rows_in(&[d], draw, seed)
    }

    /// How the rows of domain `d`'s items never seen in training were drawn after training
    /// (`None`: as training left them).
    pub fn unseen_draw(&self, d: DomainId) -> Option<UnseenRowDraw> {
        self.unseen_draws[d.index()]
    }

    /// Records how domain `d`'s never-seen rows were drawn, for a table loaded with rows drawn
    /// earlier (the score settings hold it); the rows are left as they are.
    pub fn set_unseen_draw(&mut self, d: DomainId, draw: Option<UnseenRowDraw>) -> Result<()> {
        if let Some(draw) = draw {
            draw.validate()?;
        }
        self.unseen_draws[d.index()] = draw;
        Ok(())
    }

    /// The learned part of an item of domain `d` added after training (scored by its title):
    /// what the domain's items never seen in training have, where that is one row for all of
    /// them and used whole, i.e. title rows in a domain the shrinkage leaves whole whose
    /// never-seen rows were drawn as [`UnseenRowDraw::Mean`]; `None` otherwise (the title
    /// alone, which is what a never-seen item gets in a domain that shrinks).
    pub fn new_item_learned_part(&self, d: DomainId) -> Result<Option<Vec<f32>>> {
        let Some(UnseenRowDraw::Mean { popularity }) = self.unseen_draw(d) else {
            return Ok(None);
        };
        if !self.has_text() || self.shrinkage(d).is_some() {
            return Ok(None);
        }
        let log_counts = self.host_log_counts()?;
        let values = self.host_rows()?;
        let (start, len) = self.domain_rows(d);
        let trained = weighted_trained_items(start..start + len, popularity, &log_counts);
        if trained.is_empty() {
            return Ok(None);
        }
        let total: f64 = trained.iter().map(|(_, w)| w).sum();
        let mean = weighted_mean_row(&trained, total, self.dim(), &values);
        Ok(Some(mean.into_iter().map(|v| v as f32).collect()))
    }

    /// [`Self::redraw_unseen_rows`] for the items of `domains`, the table read and written
    /// once.
    fn redraw_unseen_rows_in(
        &mut self,
        domains: &[DomainId],
        draw: UnseenRowDraw,
        seed: u64,
    ) -> Result<usize> {
        if self.unseen.is_some() {
            return Err(Error::Config(
                "redrawing unseen rows: the learned unseen-item rows (model.unseen_row) stand in for these items already".into(),
            ));
        }
        draw.validate()?;
        let device = self.rows.weight.device();
        let [n, q] = self.rows.weight.dims();
        let log_counts = self.host_log_counts()?;
        let mut values = self.host_rows()?;
        let mut drawn = 0;
        for &d in domains {
            let new_rows = self.draw_unseen_rows(d, draw, seed, &log_counts, &values);
            if !new_rows.is_empty() {
                self.unseen_draws[d.index()] = Some(draw);
            }
            for (i, new) in new_rows {
                for (v, x) in values[i * q..(i + 1) * q].iter_mut().zip(new) {
                    *v = x as f32;
                }
                drawn += 1;
            }
        }
        self.rows.weight =
            Param::from_tensor(Tensor::from_data(TensorData::new(values, [n, q]), &device));
        Ok(drawn)
    }

    /// The new rows of domain `d`'s items never seen in training, drawn as `draw` says from
    /// `seed`'s stream for `d`, with `log_counts` and `values` the table's training counts and
    /// rows: (item, row) pairs, none where a trained-row draw has no trained row to match.
    fn draw_unseen_rows(
        &self,
        d: DomainId,
        draw: UnseenRowDraw,
        seed: u64,
        log_counts: &[f32],
        values: &[f32],
    ) -> Vec<(usize, Vec<f64>)> {
        let q = self.dim();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(d.index() as u64);
        let (start, len) = self.domain_rows(d);
        let items = start..start + len;
        let unseen: Vec<usize> = items.clone().filter(|&i| log_counts[i] == 0.0).collect();
        let new_rows = match draw {
            UnseenRowDraw::Initial { scale } => {
                let std = scale / (q as f64).sqrt();
                unseen
                    .iter()
                    .map(|_| (0..q).map(|_| std * standard_normal(&mut rng)).collect())
                    .collect::<Vec<Vec<f64>>>()
            }
            UnseenRowDraw::Trained { popularity } | UnseenRowDraw::Mean { popularity } => {
                let trained = weighted_trained_items(items, popularity, log_counts);
                if trained.is_empty() {
                    // Nothing to match: these rows stay as training left them.
                    return Vec::new();
                }
                let row = |i: usize| values[i * q..(i + 1) * q].iter().map(|&v| f64::from(v));
                let total: f64 = trained.iter().map(|(_, w)| w).sum();
                let mean = weighted_mean_row(&trained, total, q, values);
                if matches!(draw, UnseenRowDraw::Mean { .. }) {
                    return unseen.into_iter().map(|i| (i, mean.clone())).collect();
                }
                // Cumulative weights for drawing donors in proportion to them.
                let cumulative: Vec<f64> = trained
                    .iter()
                    .scan(0.0, |acc, (_, w)| {
                        *acc += w / total;
                        Some(*acc)
                    })
                    .collect();
                let scale = 1.0 / (TRAINED_ROW_DONORS as f64).sqrt();
                unseen
                    .iter()
                    .map(|_| {
                        let mut new = mean.clone();
                        for _ in 0..TRAINED_ROW_DONORS {
                            let u: f64 = rng.random();
                            let k = cumulative
                                .partition_point(|&c| c < u)
                                .min(trained.len() - 1);
                            for ((x, v), m) in new.iter_mut().zip(row(trained[k].0)).zip(&mean) {
                                *x += scale * (v - m);
                            }
                        }
                        new
                    })
                    .collect()
            }
        };
        unseen.into_iter().zip(new_rows).collect()
    }
}

/// One draw of N(0, 1) (Box-Muller).
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: the logarithm stays finite
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}
