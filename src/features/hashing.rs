//! A weight-free text encoder: TF-IDF over hashed word unigrams and bigrams, projected to `dim`
//! dimensions by a fixed random Gaussian projection (each hashed feature owns a pseudo-random
//! direction), then L2-normalised.
//!
//! It needs no model download, so item text can become a feature matrix on any machine. It
//! captures shared words, not meaning: a frozen neural text encoder (CLIP, MiniLM) is the paper's
//! choice where its weights are at hand.

use std::collections::HashMap;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::features::FeatureMatrix;

/// Configuration of [`HashingTextEncoder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashingTextEncoder {
    /// Output width.
    pub dim: usize,
    /// Seed of the hash and of the projection.
    pub seed: u64,
}

impl Default for HashingTextEncoder {
    fn default() -> Self {
        Self { dim: 256, seed: 0 }
    }
}

/// What [`HashingTextEncoder::encode_items`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedSummary {
    /// Items with text, embedded.
    pub embedded: usize,
    /// Items without text: their row is all zeros (neutral in every cosine).
    pub without_text: usize,
}

/// Lower-cased alphanumeric words, with HTML's `&amp;`-style entities of titles decoded first.
pub fn words(text: &str) -> Vec<String> {
    let decoded = text
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    decoded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// 64-bit FNV-1a of `bytes`, mixed with `seed`.
fn hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// SplitMix64 step.
fn split_mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl HashingTextEncoder {
    /// The hashed features (unigrams and bigrams) of a text.
    fn features(&self, text: &str) -> Vec<u64> {
        let w = words(text);
        let mut out: Vec<u64> = w.iter().map(|t| hash(self.seed, t.as_bytes())).collect();
        out.extend(
            w.windows(2)
                .map(|p| hash(self.seed ^ 1, format!("{} {}", p[0], p[1]).as_bytes())),
        );
        out
    }

    /// Adds `weight` times the fixed random direction of `feature` to `acc`.
    fn add_direction(&self, acc: &mut [f32], feature: u64, weight: f32) {
        let mut state = feature;
        let scale = weight / (self.dim as f32).sqrt();
        for pair in acc.chunks_mut(2) {
            // Box-Muller from two uniform draws.
            let u1 = ((split_mix(&mut state) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            let u2 = (split_mix(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
            let r = (-2.0 * u1.ln()).sqrt();
            let angle = std::f64::consts::TAU * u2;
            pair[0] += scale * (r * angle.cos()) as f32;
            if let Some(second) = pair.get_mut(1) {
                *second += scale * (r * angle.sin()) as f32;
            }
        }
    }

    /// Embeds `texts` (one per item; `None` for no text) into a `[items, dim]` matrix.
    /// IDF weights come from these texts.
    pub fn encode(&self, texts: &[Option<&str>]) -> Result<(FeatureMatrix, EmbedSummary)> {
        if self.dim == 0 {
            return Err(Error::Config(
                "the hashing text encoder needs dim > 0".into(),
            ));
        }
        let docs: Vec<Option<Vec<u64>>> = texts
            .iter()
            .map(|t| t.map(|t| self.features(t)).filter(|f| !f.is_empty()))
            .collect();
        let mut df: HashMap<u64, u32> = HashMap::new();
        for doc in docs.iter().flatten() {
            let mut unique = doc.clone();
            unique.sort_unstable();
            unique.dedup();
            for f in unique {
                *df.entry(f).or_default() += 1;
            }
        }
        let n_docs = docs.iter().flatten().count() as f32;
        let mut data = vec![0.0f32; texts.len() * self.dim];
        let mut summary = EmbedSummary {
            embedded: 0,
            without_text: 0,
        };
        for (i, doc) in docs.iter().enumerate() {
            let Some(doc) = doc else {
                summary.without_text += 1;
                continue;
            };
            let mut tf: HashMap<u64, f32> = HashMap::new();
            for &f in doc {
                *tf.entry(f).or_default() += 1.0;
            }
            let row = &mut data[i * self.dim..(i + 1) * self.dim];
            let mut features: Vec<(u64, f32)> = tf.into_iter().collect();
            features.sort_unstable_by_key(|(f, _)| *f);
            for (f, count) in features {
                let idf = ((1.0 + n_docs) / (1.0 + df[&f] as f32)).ln() + 1.0;
                self.add_direction(row, f, (1.0 + count.ln()) * idf);
            }
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v /= norm);
            }
            summary.embedded += 1;
        }
        Ok((FeatureMatrix::new(texts.len(), self.dim, data)?, summary))
    }

    /// Embeds every item of `dataset` from its title (and attributes, when
    /// `with_attributes`), or from `texts` when given (item id to text, e.g. LLM-enriched text).
    pub fn encode_items(
        &self,
        dataset: &Dataset,
        with_attributes: bool,
        texts: Option<&HashMap<u32, String>>,
    ) -> Result<(FeatureMatrix, EmbedSummary)> {
        let joined: Vec<Option<String>> = dataset
            .items()
            .iter()
            .enumerate()
            .map(|(id, item)| {
                let extra = texts.and_then(|m| m.get(&(id as u32))).map(String::as_str);
                super::embed::item_text(item, with_attributes, extra)
            })
            .collect();
        let refs: Vec<Option<&str>> = joined.iter().map(|t| t.as_deref()).collect();
        self.encode(&refs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn shared_words_mean_similar_vectors() {
        let enc = HashingTextEncoder { dim: 128, seed: 3 };
        let (m, summary) = enc
            .encode(&[
                Some("Stainless steel chef knife, 8 inch"),
                Some("Chef knife &amp; sharpener, stainless"),
                Some("Organic green tea bags"),
                None,
                Some("  "),
            ])
            .unwrap();
        assert_eq!(
            summary,
            EmbedSummary {
                embedded: 3,
                without_text: 2
            }
        );
        let (a, b, c) = (m.row(0), m.row(1), m.row(2));
        assert!((cos(a, a) - 1.0).abs() < 1e-5);
        assert!(
            cos(a, b) > cos(a, c) + 0.2,
            "{} vs {}",
            cos(a, b),
            cos(a, c)
        );
        assert!(m.row(3).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn deterministic_and_seeded() {
        let texts = [Some("a red pen"), Some("blue ink")];
        let a = HashingTextEncoder { dim: 16, seed: 1 }
            .encode(&texts)
            .unwrap()
            .0;
        let b = HashingTextEncoder { dim: 16, seed: 1 }
            .encode(&texts)
            .unwrap()
            .0;
        let c = HashingTextEncoder { dim: 16, seed: 2 }
            .encode(&texts)
            .unwrap()
            .0;
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn words_decode_entities_and_split() {
        assert_eq!(
            words("Salt &amp; Pepper, 2-Pack"),
            vec!["salt", "pepper", "2", "pack"]
        );
    }
}
