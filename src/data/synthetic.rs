//! A seeded synthetic two-domain dataset with planted sequential patterns, cross-domain
//! correlation and per-item "semantic" vectors that stand in for frozen image/text features.
//!
//! How sequences are generated, so that each part of LLM-EMF has something to find:
//! - Every item belongs to one of `topics` topics; each user has a favourite topic.
//! - Within a domain, each topic's items form a cycle: `succ(i)` is the next item of the cycle
//!   (a sequential pattern that S^X and S^Y can learn).
//! - Every item has a fixed partner of the same topic in the other domain: after a switch of
//!   domain, the next item is often the partner of the last item (a cross-domain pattern that only
//!   a model reading the merged sequence S^{X+Y} can use).
//! - The image and text vectors of an item are its topic's centroid plus item-specific noise (two
//!   independent views), so frozen features carry the topic but not the item's identity: they help
//!   most for items with few interactions.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::dataset::{Dataset, Domain, Item, ItemId, Sequence, TrainingData};
use super::recbole::{DEFAULT_MAX_HISTORY, leave_one_out};
use crate::error::{Error, Result};
use crate::features::FeatureMatrix;

/// Parameters of the synthetic generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Number of users (default 3000).
    pub users: usize,
    /// Items of domain X (default 1200).
    pub items_x: usize,
    /// Items of domain Y (default 1500).
    pub items_y: usize,
    /// Number of topics (default 24).
    pub topics: usize,
    /// Shortest user sequence, valid and test targets included (default 6).
    pub min_len: usize,
    /// Longest user sequence (default 24).
    pub max_len: usize,
    /// Width of the image and text vectors (default 32).
    pub feature_dim: usize,
    /// Probability that the next item follows the planted pattern: the successor of the previous
    /// item of the same domain, or the partner of the previous item after a domain switch
    /// (default 0.5).
    pub p_follow: f64,
    /// Probability that the next item is drawn from the user's favourite topic (default 0.3); the
    /// rest is uniform noise.
    pub p_topic: f64,
    /// Standard deviation of the item-specific noise added to the topic centroid in the feature
    /// vectors (default 0.6; centroids have unit norm).
    pub feature_noise: f64,
    /// Random seed (default 7).
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            users: 3000,
            items_x: 1200,
            items_y: 1500,
            topics: 24,
            min_len: 6,
            max_len: 24,
            feature_dim: 32,
            p_follow: 0.5,
            p_topic: 0.3,
            feature_noise: 0.6,
            seed: 7,
        }
    }
}

/// A generated dataset with its two feature matrices.
#[derive(Debug, Clone)]
pub struct SyntheticData {
    /// Train/valid/test data, split leave-one-out.
    pub dataset: Dataset,
    /// Stand-in for frozen image features, `[items, feature_dim]`.
    pub image: FeatureMatrix,
    /// Stand-in for frozen text features, `[items, feature_dim]`.
    pub text: FeatureMatrix,
}

/// A standard normal sample (Box-Muller), so the generator depends on `rand` alone.
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl SyntheticConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(format!("synthetic data: {m}")));
        if self.users == 0 || self.items_x == 0 || self.items_y == 0 || self.feature_dim == 0 {
            return bad("users, items_x, items_y and feature_dim must be positive");
        }
        if self.topics == 0 || self.topics > self.items_x.min(self.items_y) {
            return bad("topics must be between 1 and the size of the smaller domain");
        }
        if self.min_len < 3 || self.max_len < self.min_len {
            return bad("need 3 <= min_len <= max_len (train, valid and test each take one item)");
        }
        let probs = [self.p_follow, self.p_topic];
        if probs.iter().any(|p| !(0.0..=1.0).contains(p)) || self.p_follow + self.p_topic > 1.0 {
            return bad("p_follow and p_topic must be probabilities summing to at most 1");
        }
        if self.feature_noise.is_nan() || self.feature_noise < 0.0 {
            return bad("feature_noise must be non-negative");
        }
        Ok(())
    }

    /// Generates the dataset. The same config always gives the same data.
    pub fn generate(&self) -> Result<SyntheticData> {
        self.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let (nx, ny, k) = (self.items_x, self.items_y, self.topics);
        let n = nx + ny;

        // Topics: a shuffled round-robin assignment within each domain.
        let mut topic = vec![0usize; n];
        let mut by_topic: [Vec<Vec<ItemId>>; 2] = [vec![Vec::new(); k], vec![Vec::new(); k]];
        for (d, range) in [(0, 0..nx), (1, nx..n)] {
            let mut ids: Vec<usize> = range.collect();
            ids.shuffle(&mut rng);
            for (j, &i) in ids.iter().enumerate() {
                topic[i] = j % k;
                by_topic[d][j % k].push(i as ItemId);
            }
        }
        // Successor cycles within each (domain, topic).
        let mut succ = vec![0 as ItemId; n];
        for group in by_topic.iter().flatten() {
            for (j, &i) in group.iter().enumerate() {
                succ[i as usize] = group[(j + 1) % group.len()];
            }
        }
        // Partners of the same topic in the other domain.
        let mut partner = vec![0 as ItemId; n];
        for i in 0..n {
            let other = usize::from(i < nx);
            let group = &by_topic[other][topic[i]];
            partner[i] = group[rng.random_range(0..group.len())];
        }

        let mut sequences = Vec::with_capacity(self.users);
        for u in 0..self.users {
            let fav = rng.random_range(0..k);
            let p_x: f64 = rng.random_range(0.3..0.7);
            let len = rng.random_range(self.min_len..=self.max_len);
            let mut items: Vec<ItemId> = Vec::with_capacity(len);
            for _ in 0..len {
                let d = usize::from(rng.random::<f64>() >= p_x);
                let r: f64 = rng.random();
                let item = match items.last() {
                    Some(&prev) if r < self.p_follow => {
                        let prev_domain = usize::from(prev as usize >= nx);
                        if prev_domain == d {
                            succ[prev as usize]
                        } else {
                            partner[prev as usize]
                        }
                    }
                    _ if r < self.p_follow + self.p_topic => {
                        let group = &by_topic[d][fav];
                        group[rng.random_range(0..group.len())]
                    }
                    _ => {
                        let (lo, hi) = if d == 0 { (0, nx) } else { (nx, n) };
                        rng.random_range(lo..hi) as ItemId
                    }
                };
                items.push(item);
            }
            sequences.push(Sequence {
                user: u as u32,
                items,
            });
        }

        let features = |rng: &mut ChaCha8Rng| -> Result<FeatureMatrix> {
            let dim = self.feature_dim;
            let centroids: Vec<Vec<f64>> = (0..k)
                .map(|_| {
                    let v: Vec<f64> = (0..dim).map(|_| normal(rng)).collect();
                    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
                    v.into_iter().map(|x| x / norm).collect()
                })
                .collect();
            let noise = self.feature_noise / (dim as f64).sqrt();
            let data = (0..n)
                .flat_map(|i| {
                    let c = &centroids[topic[i]];
                    (0..dim)
                        .map(|j| (c[j] + noise * normal(rng)) as f32)
                        .collect::<Vec<_>>()
                })
                .collect();
            FeatureMatrix::new(n, dim, data)
        };
        let image = features(&mut rng)?;
        let text = features(&mut rng)?;

        let domains = [
            Domain {
                name: "X".into(),
                start: 0,
                len: nx as u32,
            },
            Domain {
                name: "Y".into(),
                start: nx as u32,
                len: ny as u32,
            },
        ];
        let items = (0..n)
            .map(|i| Item {
                title: Some(format!(
                    "{} item {} (topic {})",
                    if i < nx { "X" } else { "Y" },
                    i,
                    topic[i]
                )),
                attributes: None,
                key: None,
            })
            .collect();
        let (train, valid, test) = leave_one_out(sequences, DEFAULT_MAX_HISTORY);
        let dataset = Dataset::new(
            "synthetic",
            domains,
            items,
            TrainingData::Present(train),
            valid,
            test,
        )?;
        Ok(SyntheticData {
            dataset,
            image,
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::{DomainId, Split};

    fn small() -> SyntheticConfig {
        SyntheticConfig {
            users: 300,
            items_x: 60,
            items_y: 80,
            topics: 6,
            ..Default::default()
        }
    }

    #[test]
    fn same_seed_same_data_other_seed_other_data() {
        let a = small().generate().unwrap();
        let b = small().generate().unwrap();
        assert_eq!(a.dataset.train().unwrap(), b.dataset.train().unwrap());
        assert_eq!(a.image, b.image);
        let c = SyntheticConfig { seed: 8, ..small() }.generate().unwrap();
        assert_ne!(a.dataset.train().unwrap(), c.dataset.train().unwrap());
    }

    #[test]
    fn shapes_and_split() {
        let cfg = small();
        let data = cfg.generate().unwrap();
        let d = &data.dataset;
        assert_eq!(d.num_items(), 140);
        assert_eq!(data.image.rows(), 140);
        assert_eq!(data.text.dim(), cfg.feature_dim);
        assert_eq!(d.examples(Split::Test).len(), cfg.users);
        assert_eq!(d.examples(Split::Valid).len(), cfg.users);
        let stats = d.stats();
        assert!(
            stats
                .domains
                .iter()
                .all(|s| s.valid_targets > 0 && s.test_targets > 0)
        );
        for s in d.train().unwrap() {
            assert!(s.items.len() >= cfg.min_len - 2 && s.items.len() <= cfg.max_len - 2);
        }
    }

    #[test]
    fn planted_cross_domain_pattern_is_present() {
        // After a domain switch the next item is the previous item's partner far more often
        // than chance: count how often the same (prev, next) cross pair repeats.
        let data = small().generate().unwrap();
        let d = &data.dataset;
        let mut pairs = std::collections::HashMap::new();
        let mut switches = 0usize;
        for s in d.train().unwrap() {
            for w in s.items.windows(2) {
                if d.domain_of(w[0]) != d.domain_of(w[1]) {
                    switches += 1;
                    *pairs.entry((w[0], w[1])).or_insert(0usize) += 1;
                }
            }
        }
        let repeated: usize = pairs.values().filter(|&&c| c > 1).map(|c| c - 1).sum();
        assert!(switches > 100);
        // Uniform choices among ~70 items would almost never repeat a pair this often.
        assert!(repeated * 5 > switches, "repeated {repeated} of {switches}");
        assert_eq!(d.domain_of(0), Some(DomainId::X));
    }

    #[test]
    fn features_cluster_by_topic() {
        let data = small().generate().unwrap();
        let cos = |a: &[f32], b: &[f32]| {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
            dot / (na * nb)
        };
        // Topic is part of the title; compare same-topic and different-topic pairs.
        let topic_of = |i: usize| {
            let t = data.dataset.items()[i].title.as_ref().unwrap();
            t.rsplit("topic ")
                .next()
                .unwrap()
                .trim_end_matches(')')
                .parse::<usize>()
                .unwrap()
        };
        let (mut same, mut diff, mut ns, mut nd) = (0.0, 0.0, 0, 0);
        for i in 0..40 {
            for j in (i + 1)..40 {
                let c = cos(data.image.row(i), data.image.row(j));
                if topic_of(i) == topic_of(j) {
                    same += c;
                    ns += 1;
                } else {
                    diff += c;
                    nd += 1;
                }
            }
        }
        assert!(same / ns as f32 > diff / nd as f32 + 0.3);
    }

    #[test]
    fn invalid_config_is_an_error() {
        let err = SyntheticConfig {
            min_len: 2,
            ..small()
        }
        .generate()
        .unwrap_err();
        assert!(err.to_string().contains("min_len"), "{err}");
        let err = SyntheticConfig {
            p_follow: 0.9,
            p_topic: 0.3,
            ..small()
        }
        .generate()
        .unwrap_err();
        assert!(err.to_string().contains("p_follow"), "{err}");
    }
}
