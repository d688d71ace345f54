//! The in-memory cross-domain dataset: two named domains, the item catalogue, training sequences
//! and valid/test examples. Plain Rust: tensors appear only in the batcher.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A global item id: domain X holds `[0, n_x)`, domain Y holds `[n_x, n_x + n_y)`.
pub type ItemId = u32;

/// One of the two domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DomainId {
    /// The first domain (C2DSR's "A").
    X,
    /// The second domain (C2DSR's "B").
    Y,
}

impl DomainId {
    /// Both domains, in order.
    pub const BOTH: [DomainId; 2] = [DomainId::X, DomainId::Y];

    /// 0 for X, 1 for Y.
    pub fn index(self) -> usize {
        match self {
            DomainId::X => 0,
            DomainId::Y => 1,
        }
    }

    /// The other domain.
    pub fn other(self) -> DomainId {
        match self {
            DomainId::X => DomainId::Y,
            DomainId::Y => DomainId::X,
        }
    }
}

/// A domain: its name and its contiguous range of global item ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// Human-readable name ("Movie", "Food", ...).
    pub name: String,
    /// First global item id of the domain.
    pub start: ItemId,
    /// Number of items.
    pub len: u32,
}

impl Domain {
    /// Whether `item` belongs to this domain.
    pub fn contains(&self, item: ItemId) -> bool {
        item >= self.start && item - self.start < self.len
    }

    /// The position of `item` inside the domain (`item - start`).
    pub fn local(&self, item: ItemId) -> u32 {
        item - self.start
    }

    /// The global ids of the domain.
    pub fn items(&self) -> std::ops::Range<ItemId> {
        self.start..self.start + self.len
    }
}

/// What is known about an item besides its id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The item's title, when known.
    pub title: Option<String>,
    /// Free-text attributes (categories, brand...), when known.
    pub attributes: Option<String>,
    /// The item's id in the source files when it is not the global id (a RecBole token such
    /// as an ASIN); image files may be named by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A user's training sequence, in time order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    /// The user's index.
    pub user: u32,
    /// Global item ids in time order.
    pub items: Vec<ItemId>,
}

/// An evaluation example: a history and the item that followed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The user's index.
    pub user: u32,
    /// Global item ids in time order.
    pub history: Vec<ItemId>,
    /// The next item.
    pub target: ItemId,
}

/// Which evaluation split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The validation split (early stopping, model selection).
    Valid,
    /// The test split (reported numbers).
    Test,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Valid => "valid",
            Split::Test => "test",
        })
    }
}

/// Training data, or where it should have been.
#[derive(Debug, Clone)]
pub enum TrainingData {
    /// The training sequences.
    Present(Vec<Sequence>),
    /// The training file is absent: the dataset loads for evaluation only.
    Missing {
        /// Where the file was expected.
        path: PathBuf,
        /// Where to get it.
        hint: String,
    },
}

/// A two-domain sequential recommendation dataset held in memory.
#[derive(Debug, Clone)]
pub struct Dataset {
    name: String,
    domains: [Domain; 2],
    items: Vec<Item>,
    train: TrainingData,
    valid: Vec<Example>,
    test: Vec<Example>,
}

impl Dataset {
    /// Builds a dataset, checking that every item id lies in the catalogue and that the two
    /// domains tile it (`X = [0, n_x)`, `Y = [n_x, n_x + n_y)`).
    pub fn new(
        name: impl Into<String>,
        domains: [Domain; 2],
        items: Vec<Item>,
        train: TrainingData,
        valid: Vec<Example>,
        test: Vec<Example>,
    ) -> Result<Self> {
        let [x, y] = &domains;
        if x.start != 0 || y.start != x.len {
            return Err(Error::InvalidInput(format!(
                "domains must tile the catalogue: X starts at {} (expected 0), Y at {} (expected {})",
                x.start, y.start, x.len
            )));
        }
        if x.len == 0 || y.len == 0 {
            return Err(Error::InvalidInput(format!(
                "both domains need items: {} has {}, {} has {}",
                x.name, x.len, y.name, y.len
            )));
        }
        let n = (x.len + y.len) as usize;
        if items.len() != n {
            return Err(Error::InvalidInput(format!(
                "the catalogue has {} items but the domains hold {n}",
                items.len()
            )));
        }
        let check = |what: &str, i: usize, id: ItemId| -> Result<()> {
            if (id as usize) < n {
                Ok(())
            } else {
                Err(Error::InvalidInput(format!(
                    "{what} {i}: item {id} is outside the catalogue of {n} items"
                )))
            }
        };
        if let TrainingData::Present(seqs) = &train {
            for (i, s) in seqs.iter().enumerate() {
                s.items
                    .iter()
                    .try_for_each(|&id| check("training sequence", i, id))?;
            }
        }
        for (what, examples) in [("valid example", &valid), ("test example", &test)] {
            for (i, e) in examples.iter().enumerate() {
                e.history.iter().try_for_each(|&id| check(what, i, id))?;
                check(what, i, e.target)?;
            }
        }
        Ok(Self {
            name: name.into(),
            domains,
            items,
            train,
            valid,
            test,
        })
    }

    /// The dataset's name (its directory name, or "synthetic").
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Both domains, X first.
    pub fn domains(&self) -> &[Domain; 2] {
        &self.domains
    }

    /// One domain.
    pub fn domain(&self, id: DomainId) -> &Domain {
        &self.domains[id.index()]
    }

    /// The domain of a global item id, or `None` outside the catalogue.
    pub fn domain_of(&self, item: ItemId) -> Option<DomainId> {
        DomainId::BOTH
            .into_iter()
            .find(|&d| self.domain(d).contains(item))
    }

    /// The domain named `name` (case-insensitive), or X/Y by letter.
    pub fn domain_by_name(&self, name: &str) -> Result<DomainId> {
        DomainId::BOTH
            .into_iter()
            .find(|&d| {
                self.domain(d).name.eq_ignore_ascii_case(name)
                    || name.eq_ignore_ascii_case(if d == DomainId::X { "x" } else { "y" })
            })
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown domain {name:?}: this dataset has {:?} (X) and {:?} (Y)",
                    self.domains[0].name, self.domains[1].name
                ))
            })
    }

    /// Number of items in both domains.
    pub fn num_items(&self) -> usize {
        self.items.len()
    }

    /// The catalogue, indexed by global item id.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// One item, or an error naming the id.
    pub fn item(&self, id: ItemId) -> Result<&Item> {
        self.items.get(id as usize).ok_or_else(|| {
            Error::InvalidInput(format!(
                "item {id} is outside the catalogue of {} items",
                self.items.len()
            ))
        })
    }

    /// The training sequences, or an error naming the missing file and where to get it.
    pub fn train(&self) -> Result<&[Sequence]> {
        match &self.train {
            TrainingData::Present(s) => Ok(s),
            TrainingData::Missing { path, hint } => Err(Error::MissingTrainingData {
                path: path.clone(),
                hint: hint.clone(),
            }),
        }
    }

    /// Whether training data is present.
    pub fn has_train(&self) -> bool {
        matches!(self.train, TrainingData::Present(_))
    }

    /// The examples of a split.
    pub fn examples(&self, split: Split) -> &[Example] {
        match split {
            Split::Valid => &self.valid,
            Split::Test => &self.test,
        }
    }

    /// For every user, the sorted, deduplicated items they interacted with anywhere in the dataset
    /// (training sequences, histories and targets of both splits). The ABXI protocol excludes these
    /// from the sampled negatives.
    pub fn user_items(&self) -> HashMap<u32, Vec<ItemId>> {
        let mut map: HashMap<u32, Vec<ItemId>> = HashMap::new();
        if let TrainingData::Present(seqs) = &self.train {
            for s in seqs {
                map.entry(s.user).or_default().extend(&s.items);
            }
        }
        for e in self.valid.iter().chain(&self.test) {
            let v = map.entry(e.user).or_default();
            v.extend(&e.history);
            v.push(e.target);
        }
        for v in map.values_mut() {
            v.sort_unstable();
            v.dedup();
        }
        map
    }

    /// The dataset with every occurrence of `items` removed from the training sequences
    /// (sequences left empty are dropped): the items stay in the catalogue, and in the
    /// evaluation histories and targets, but training never sees them.
    pub fn without_training_items(&self, items: &std::collections::HashSet<ItemId>) -> Self {
        let train = match &self.train {
            TrainingData::Present(seqs) => TrainingData::Present(
                seqs.iter()
                    .map(|s| Sequence {
                        user: s.user,
                        items: s
                            .items
                            .iter()
                            .copied()
                            .filter(|i| !items.contains(i))
                            .collect(),
                    })
                    .filter(|s| !s.items.is_empty())
                    .collect(),
            ),
            missing => missing.clone(),
        };
        Self {
            train,
            ..self.clone()
        }
    }

    /// The dataset with only the examples of `split` for which `keep` holds (the other split,
    /// the catalogue and the training sequences unchanged); also returns the kept examples'
    /// positions in the split.
    pub fn with_examples_where(
        &self,
        split: Split,
        keep: impl Fn(&Example) -> bool,
    ) -> (Self, Vec<usize>) {
        let examples = self.examples(split);
        let kept: Vec<usize> = (0..examples.len())
            .filter(|&i| keep(&examples[i]))
            .collect();
        let chosen: Vec<Example> = kept.iter().map(|&i| examples[i].clone()).collect();
        let mut out = self.clone();
        match split {
            Split::Valid => out.valid = chosen,
            Split::Test => out.test = chosen,
        }
        (out, kept)
    }

    /// Interaction counts per item in the training sequences (zeros without training data).
    pub fn train_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.items.len()];
        if let TrainingData::Present(seqs) = &self.train {
            for &i in seqs.iter().flat_map(|s| &s.items) {
                counts[i as usize] += 1;
            }
        }
        counts
    }

    /// Summary counts per domain.
    pub fn stats(&self) -> DatasetStats {
        let train = match &self.train {
            TrainingData::Present(s) => Some(s.as_slice()),
            TrainingData::Missing { .. } => None,
        };
        let domains = DomainId::BOTH
            .into_iter()
            .map(|d| {
                let dom = self.domain(d);
                let count_targets =
                    |ex: &[Example]| ex.iter().filter(|e| dom.contains(e.target)).count();
                DomainStats {
                    name: dom.name.clone(),
                    items: dom.len as usize,
                    train_interactions: train.map(|t| {
                        t.iter()
                            .flat_map(|s| &s.items)
                            .filter(|&&i| dom.contains(i))
                            .count()
                    }),
                    valid_targets: count_targets(&self.valid),
                    test_targets: count_targets(&self.test),
                    titled_items: dom
                        .items()
                        .filter(|&i| self.items[i as usize].title.is_some())
                        .count(),
                    after_other_domain: self
                        .valid
                        .iter()
                        .chain(&self.test)
                        .filter(|e| dom.contains(e.target))
                        .filter(|e| e.history.last().is_some_and(|&i| !dom.contains(i)))
                        .count(),
                    in_history: self
                        .valid
                        .iter()
                        .chain(&self.test)
                        .filter(|e| dom.contains(e.target) && e.history.contains(&e.target))
                        .count(),
                }
            })
            .collect();
        let (lens, count): (usize, usize) = match train {
            Some(t) => (t.iter().map(|s| s.items.len()).sum(), t.len()),
            // Without training data, describe the evaluation histories (+ their targets).
            None => (
                self.valid
                    .iter()
                    .chain(&self.test)
                    .map(|e| e.history.len() + 1)
                    .sum(),
                self.valid.len() + self.test.len(),
            ),
        };
        DatasetStats {
            name: self.name.clone(),
            domains,
            train_sequences: train.map(|t| t.len()),
            avg_sequence_length: if count == 0 {
                0.0
            } else {
                lens as f64 / count as f64
            },
            avg_length_of: if train.is_some() {
                "training sequences".into()
            } else {
                "evaluation histories with their targets".into()
            },
        }
    }
}

/// Counts for one domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainStats {
    /// Domain name.
    pub name: String,
    /// Items in the catalogue.
    pub items: usize,
    /// Interactions with the domain's items in the training sequences (`None`: no training data).
    pub train_interactions: Option<usize>,
    /// Validation examples whose target is in this domain.
    pub valid_targets: usize,
    /// Test examples whose target is in this domain.
    pub test_targets: usize,
    /// Items with a known title.
    pub titled_items: usize,
    /// Validation and test targets in this domain whose history ends with an item of the other
    /// domain (the cross-domain transitions a single-domain model cannot see).
    pub after_other_domain: usize,
    /// Validation and test targets in this domain that already occur in their own history
    /// (repeat interactions; under the abxi protocol they are never negatives).
    #[serde(default)]
    pub in_history: usize,
}

/// Summary counts of a dataset, as printed by `llm-emf stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetStats {
    /// Dataset name.
    pub name: String,
    /// Per-domain counts, X first.
    pub domains: Vec<DomainStats>,
    /// Number of training sequences (`None`: no training data).
    pub train_sequences: Option<usize>,
    /// Average sequence length.
    pub avg_sequence_length: f64,
    /// What `avg_sequence_length` averages over.
    pub avg_length_of: String,
}

impl std::fmt::Display for DatasetStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "dataset {}", self.name)?;
        match self.train_sequences {
            Some(n) => writeln!(f, "training sequences: {n}")?,
            None => writeln!(f, "training sequences: none (training file missing)")?,
        }
        writeln!(
            f,
            "average sequence length: {:.2} ({})",
            self.avg_sequence_length, self.avg_length_of
        )?;
        writeln!(
            f,
            "{:<12} {:>8} {:>12} {:>8} {:>8} {:>8} {:>11} {:>11}",
            "domain",
            "items",
            "train inter.",
            "valid",
            "test",
            "titled",
            "after other",
            "in history"
        )?;
        for d in &self.domains {
            let train = d
                .train_interactions
                .map_or_else(|| "-".to_string(), |n| n.to_string());
            let share = if d.items == 0 {
                0.0
            } else {
                100.0 * d.titled_items as f64 / d.items as f64
            };
            let targets = d.valid_targets + d.test_targets;
            let pct = |n: usize| {
                if targets == 0 {
                    0.0
                } else {
                    100.0 * n as f64 / targets as f64
                }
            };
            writeln!(
                f,
                "{:<12} {:>8} {:>12} {:>8} {:>8} {:>7.1}% {:>10.1}% {:>10.1}%",
                d.name,
                d.items,
                train,
                d.valid_targets,
                d.test_targets,
                share,
                pct(d.after_other_domain),
                pct(d.in_history)
            )?;
        }
        writeln!(
            f,
            "(after other: valid and test targets whose history ends with an item of the other \
             domain; in history: targets the user already has)"
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        let domains = [
            Domain {
                name: "A".into(),
                start: 0,
                len: 3,
            },
            Domain {
                name: "B".into(),
                start: 3,
                len: 2,
            },
        ];
        let mut items = vec![Item::default(); 5];
        items[1].title = Some("one".into());
        Dataset::new(
            "tiny",
            domains,
            items,
            TrainingData::Present(vec![Sequence {
                user: 0,
                items: vec![0, 3, 1],
            }]),
            vec![Example {
                user: 0,
                history: vec![0, 3],
                target: 4,
            }],
            vec![Example {
                user: 0,
                history: vec![0, 3, 4],
                target: 2,
            }],
        )
        .unwrap()
    }

    #[test]
    fn domains_and_stats() {
        let d = tiny();
        assert_eq!(d.domain_of(2), Some(DomainId::X));
        assert_eq!(d.domain_of(3), Some(DomainId::Y));
        assert_eq!(d.domain_of(5), None);
        assert_eq!(d.domain_by_name("b").unwrap(), DomainId::Y);
        assert_eq!(d.domain_by_name("x").unwrap(), DomainId::X);
        assert!(d.domain_by_name("C").is_err());
        let s = d.stats();
        assert_eq!(s.train_sequences, Some(1));
        assert_eq!(s.domains[0].train_interactions, Some(2));
        assert_eq!(s.domains[1].valid_targets, 1);
        assert_eq!(s.domains[0].test_targets, 1);
        assert_eq!(s.domains[0].titled_items, 1);
        // Valid 4 (B) follows 3 (B); test 2 (A) follows 4 (B); neither target is a repeat.
        assert_eq!(s.domains[1].after_other_domain, 0);
        assert_eq!(s.domains[0].after_other_domain, 1);
        assert_eq!(s.domains[0].in_history + s.domains[1].in_history, 0);
        assert!((s.avg_sequence_length - 3.0).abs() < 1e-12);
        assert_eq!(d.user_items()[&0], vec![0, 1, 2, 3, 4]);
        assert_eq!(d.train_counts(), vec![1, 1, 0, 1, 0]);
    }

    #[test]
    fn stats_count_repeat_targets() {
        let d = tiny();
        let d = Dataset::new(
            "repeats",
            d.domains().clone(),
            d.items().to_vec(),
            TrainingData::Present(vec![]),
            vec![Example {
                user: 0,
                history: vec![3, 0],
                target: 3,
            }],
            vec![],
        )
        .unwrap();
        let s = d.stats();
        assert_eq!(s.domains[1].in_history, 1);
        assert_eq!(s.domains[1].after_other_domain, 1);
        assert!(s.to_string().contains("100.0%"), "{s}");
    }

    #[test]
    fn rejects_items_outside_the_catalogue() {
        let d = tiny();
        let err = Dataset::new(
            "bad",
            d.domains().clone(),
            d.items().to_vec(),
            TrainingData::Present(vec![]),
            vec![Example {
                user: 0,
                history: vec![9],
                target: 0,
            }],
            vec![],
        )
        .unwrap_err();
        assert!(err.to_string().contains("item 9"), "{err}");
    }

    #[test]
    fn missing_training_data_names_the_file() {
        let d = tiny();
        let d = Dataset::new(
            "eval-only",
            d.domains().clone(),
            d.items().to_vec(),
            TrainingData::Missing {
                path: "dir/traindata_new.txt".into(),
                hint: "get it from the authors".into(),
            },
            vec![],
            vec![],
        )
        .unwrap();
        let err = d.train().unwrap_err().to_string();
        assert!(err.contains("dir/traindata_new.txt"), "{err}");
        assert!(err.contains("get it from the authors"), "{err}");
        assert!(d.stats().train_sequences.is_none());
    }
}
