//! Candidate sampling for evaluation.
//!
//! - [`Protocol::C2dsr`]: the protocol of C2DSR and the LLM-EMF paper: 999 negatives drawn
//!   uniformly, with replacement, from the target's domain, excluding only the target.
//! - [`Protocol::Abxi`]: the protocol of ABXI: 999 negatives from the target's domain, excluding
//!   every item of that domain the user interacted with anywhere in the dataset. Drawn without
//!   replacement; a user who leaves fewer than 999 eligible items gets them all.
//! - [`Protocol::Full`]: no sampling: the target is ranked against every item of its domain.
//!
//! Negatives come from one ChaCha8 stream seeded with the given seed, consumed example by example
//! in split order, so the same seed and dataset always give the same candidates. Sampled
//! candidates can be saved and reloaded ([`Candidates::save`], [`Candidates::load`]).

use std::collections::HashSet;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::dataset::{Dataset, ItemId, Split};
use crate::error::{Error, Result};
use crate::io::write_atomic;

/// Number of negatives of the sampled protocols.
pub const DEFAULT_NEGATIVES: usize = 999;

/// An evaluation protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// 999 uniform negatives from the target domain, excluding only the target (C2DSR, LLM-EMF).
    C2dsr,
    /// 999 negatives from the target domain, excluding all the user's items (ABXI).
    Abxi,
    /// Rank against every item of the target domain.
    Full,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::C2dsr => "c2dsr",
            Protocol::Abxi => "abxi",
            Protocol::Full => "full",
        })
    }
}

/// Header of a candidates file: what the negatives were drawn for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidatesInfo {
    /// The protocol.
    pub protocol: Protocol,
    /// The split.
    pub split: Split,
    /// The seed.
    pub seed: u64,
    /// Negatives asked for per example.
    pub negatives: usize,
    /// Name of the dataset.
    pub dataset: String,
    /// Number of examples of the split.
    pub examples: usize,
}

/// The negatives of every example of a split (empty lists under [`Protocol::Full`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates {
    /// What they were drawn for.
    pub info: CandidatesInfo,
    /// One list of negative global ids per example, in split order.
    pub negatives: Vec<Vec<ItemId>>,
}

const MAGIC: &[u8; 8] = b"LLMEMFC1";

impl Candidates {
    /// Draws the candidates of `split` under `protocol`.
    pub fn sample(
        dataset: &Dataset,
        split: Split,
        protocol: Protocol,
        seed: u64,
        negatives: usize,
    ) -> Result<Self> {
        let examples = dataset.examples(split);
        let info = CandidatesInfo {
            protocol,
            split,
            seed,
            negatives,
            dataset: dataset.name().to_string(),
            examples: examples.len(),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let user_items = match protocol {
            Protocol::Abxi => Some(dataset.user_items()),
            _ => None,
        };
        let mut out = Vec::with_capacity(examples.len());
        for (i, e) in examples.iter().enumerate() {
            let domain = dataset.domain_of(e.target).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "{split} example {i}: target {} has no domain",
                    e.target
                ))
            })?;
            let dom = dataset.domain(domain);
            let negs = match protocol {
                Protocol::Full => Vec::new(),
                Protocol::C2dsr => {
                    if dom.len < 2 {
                        return Err(Error::InvalidInput(format!(
                            "domain {} has a single item: nothing to sample",
                            dom.name
                        )));
                    }
                    (0..negatives)
                        .map(|_| {
                            loop {
                                let c = rng.random_range(dom.items());
                                if c != e.target {
                                    break c;
                                }
                            }
                        })
                        .collect()
                }
                Protocol::Abxi => {
                    let seen: HashSet<ItemId> = user_items
                        .as_ref()
                        .and_then(|m| m.get(&e.user))
                        .map(|v| v.iter().copied().filter(|&i| dom.contains(i)).collect())
                        .unwrap_or_default();
                    let mut excluded = seen;
                    excluded.insert(e.target);
                    let eligible = dom.len as usize - excluded.len();
                    if eligible <= negatives {
                        dom.items().filter(|i| !excluded.contains(i)).collect()
                    } else {
                        let mut chosen = Vec::with_capacity(negatives);
                        while chosen.len() < negatives {
                            let c = rng.random_range(dom.items());
                            if excluded.insert(c) {
                                chosen.push(c);
                            }
                        }
                        chosen
                    }
                }
            };
            out.push(negs);
        }
        Ok(Self {
            info,
            negatives: out,
        })
    }

    /// Writes the candidates to `path` (a small binary format: magic, JSON header, then per
    /// example a little-endian u32 count and its u32 ids), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let header = serde_json::to_vec(&self.info).map_err(|e| Error::json(path, e))?;
        let total: usize = self.negatives.iter().map(|n| n.len() + 1).sum();
        let mut out = Vec::with_capacity(16 + header.len() + 4 * total);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        for negs in &self.negatives {
            out.extend_from_slice(&(negs.len() as u32).to_le_bytes());
            for n in negs {
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        write_atomic(path, &out)
    }

    /// Reads candidates written by [`Candidates::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |m: &str| Error::format(path, format!("not a candidates file: {m}"));
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(bad("bad magic"));
        }
        let mut pos = 8;
        let read_u32 = |pos: &mut usize| -> Result<u32> {
            let b = bytes.get(*pos..*pos + 4).ok_or_else(|| bad("truncated"))?;
            *pos += 4;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let header_len = read_u32(&mut pos)? as usize;
        let header = bytes
            .get(pos..pos + header_len)
            .ok_or_else(|| bad("truncated header"))?;
        let info: CandidatesInfo =
            serde_json::from_slice(header).map_err(|e| Error::json(path, e))?;
        pos += header_len;
        let mut negatives = Vec::with_capacity(info.examples);
        for _ in 0..info.examples {
            let count = read_u32(&mut pos)? as usize;
            let negs = (0..count)
                .map(|_| read_u32(&mut pos))
                .collect::<Result<Vec<_>>>()?;
            negatives.push(negs);
        }
        if pos != bytes.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(Self { info, negatives })
    }

    /// Checks that these candidates were drawn for `dataset`'s `split`, and that every negative
    /// lies in its example's target domain.
    pub fn check(&self, dataset: &Dataset, split: Split) -> Result<()> {
        let examples = dataset.examples(split);
        if self.info.split != split || self.negatives.len() != examples.len() {
            return Err(Error::InvalidInput(format!(
                "candidates drawn for {} examples of the {} split do not match the {} examples of the {split} split",
                self.negatives.len(),
                self.info.split,
                examples.len()
            )));
        }
        for (i, (e, negs)) in examples.iter().zip(&self.negatives).enumerate() {
            let d = dataset.domain_of(e.target);
            if let Some(bad) = negs.iter().find(|&&n| dataset.domain_of(n) != d) {
                return Err(Error::InvalidInput(format!(
                    "candidates of {split} example {i}: negative {bad} is not in the target's domain"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::SyntheticConfig;

    fn data() -> Dataset {
        SyntheticConfig {
            users: 50,
            items_x: 30,
            items_y: 1200,
            topics: 3,
            ..Default::default()
        }
        .generate()
        .unwrap()
        .dataset
    }

    #[test]
    fn c2dsr_excludes_only_the_target_and_stays_in_domain() {
        let d = data();
        let c = Candidates::sample(&d, Split::Test, Protocol::C2dsr, 1, 999).unwrap();
        c.check(&d, Split::Test).unwrap();
        for (e, negs) in d.examples(Split::Test).iter().zip(&c.negatives) {
            assert_eq!(negs.len(), 999);
            assert!(!negs.contains(&e.target));
        }
        // Domain X has 30 items: with replacement, duplicates are certain there.
        let x_example = d
            .examples(Split::Test)
            .iter()
            .position(|e| e.target < 30)
            .unwrap();
        let negs = &c.negatives[x_example];
        let unique: HashSet<_> = negs.iter().collect();
        assert_eq!(unique.len(), 29);
    }

    #[test]
    fn abxi_excludes_the_users_items() {
        let d = data();
        let c = Candidates::sample(&d, Split::Valid, Protocol::Abxi, 1, 999).unwrap();
        let user_items = d.user_items();
        for (e, negs) in d.examples(Split::Valid).iter().zip(&c.negatives) {
            let seen = &user_items[&e.user];
            assert!(negs.iter().all(|n| !seen.contains(n)));
            let unique: HashSet<_> = negs.iter().collect();
            assert_eq!(unique.len(), negs.len());
            if e.target >= 30 {
                assert_eq!(negs.len(), 999);
            } else {
                let dom_seen = seen.iter().filter(|&&i| i < 30).count();
                assert_eq!(negs.len(), 30 - dom_seen);
            }
        }
    }

    #[test]
    fn seeded_and_round_trips_through_a_file() {
        let d = data();
        let a = Candidates::sample(&d, Split::Test, Protocol::C2dsr, 5, 20).unwrap();
        let b = Candidates::sample(&d, Split::Test, Protocol::C2dsr, 5, 20).unwrap();
        let c = Candidates::sample(&d, Split::Test, Protocol::C2dsr, 6, 20).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.negatives, c.negatives);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cands.bin");
        a.save(&path).unwrap();
        assert_eq!(Candidates::load(&path).unwrap(), a);
        std::fs::write(&path, b"garbage!").unwrap();
        let err = Candidates::load(&path).unwrap_err().to_string();
        assert!(err.contains("cands.bin"), "{err}");
    }

    #[test]
    fn full_protocol_has_no_negatives() {
        let d = data();
        let c = Candidates::sample(&d, Split::Test, Protocol::Full, 0, 999).unwrap();
        assert!(c.negatives.iter().all(Vec::is_empty));
    }

    #[test]
    fn check_rejects_candidates_of_another_split() {
        let d = data();
        let c = Candidates::sample(&d, Split::Test, Protocol::C2dsr, 0, 5).unwrap();
        assert!(c.check(&d, Split::Valid).is_err());
    }
}
