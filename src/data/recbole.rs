//! Reader for RecBole atomic files: `NAME.inter` (`user_id:token`, `item_id:token`,
//! `timestamp:float`) and `NAME.item` (`item_id:token`, `domain:token`, optional
//! `title:token_seq`), with a per-user leave-one-out split.
//!
//! Global ids: the items of the first domain met in `NAME.item` (domain X) get `0..n_x` in file
//! order, the other domain's items `n_x..n_x + n_y` in file order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::dataset::{Dataset, Domain, Example, Item, ItemId, Sequence, TrainingData};
use crate::error::{Error, Result};
use crate::io::{numbered_lines, read_text};

/// Default maximum history length of the leave-one-out split.
pub const DEFAULT_MAX_HISTORY: usize = 50;

/// Options of the RecBole reader.
#[derive(Debug, Clone)]
pub struct RecboleOptions {
    /// Keep at most this many most recent items in each valid/test history (default 50).
    pub max_history: usize,
    /// The two domain names, X first. Default: in order of first appearance in `NAME.item`.
    /// When given, an item of any other domain is an error.
    pub domain_names: Option<[String; 2]>,
}

impl Default for RecboleOptions {
    fn default() -> Self {
        Self {
            max_history: DEFAULT_MAX_HISTORY,
            domain_names: None,
        }
    }
}

/// The `.inter` file of `dir`, if it holds exactly one. Errors if it holds several.
pub fn find_inter_file(dir: &Path) -> Result<Option<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "inter") && p.is_file())
        .collect();
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(Error::format(
            dir,
            format!(
                "several .inter files ({}): keep one dataset per directory",
                found
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Loads `NAME.inter` and `NAME.item` from `dir`.
pub fn load_recbole(dir: &Path, options: &RecboleOptions) -> Result<Dataset> {
    if options.max_history == 0 {
        return Err(Error::Config("max_history must be at least 1".into()));
    }
    let inter_path = find_inter_file(dir)?.ok_or_else(|| {
        Error::format(dir, "no NAME.inter file: not a RecBole atomic-file dataset")
    })?;
    let item_path = inter_path.with_extension("item");
    let (tokens, items, domains) = read_item_file(&item_path, options.domain_names.as_ref())?;
    let sequences = read_inter_file(&inter_path, &tokens)?;
    let (train, valid, test) = leave_one_out(sequences, options.max_history);
    let name = inter_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    Dataset::new(
        name,
        domains,
        items,
        TrainingData::Present(train),
        valid,
        test,
    )
}

/// Splits time-ordered user sequences: the last interaction is the test target (history: all
/// before it), the second to last the validation target (history: all before it), the rest the
/// training sequence. Histories keep their `max_history` most recent items. Users with fewer than
/// three interactions contribute their whole sequence to training only.
pub fn leave_one_out(
    sequences: Vec<Sequence>,
    max_history: usize,
) -> (Vec<Sequence>, Vec<Example>, Vec<Example>) {
    let tail = |s: &[ItemId]| s[s.len().saturating_sub(max_history)..].to_vec();
    let mut train = Vec::with_capacity(sequences.len());
    let mut valid = Vec::with_capacity(sequences.len());
    let mut test = Vec::with_capacity(sequences.len());
    for s in sequences {
        let n = s.items.len();
        if n < 3 {
            train.push(s);
            continue;
        }
        test.push(Example {
            user: s.user,
            history: tail(&s.items[..n - 1]),
            target: s.items[n - 1],
        });
        valid.push(Example {
            user: s.user,
            history: tail(&s.items[..n - 2]),
            target: s.items[n - 2],
        });
        train.push(Sequence {
            user: s.user,
            items: s.items[..n - 2].to_vec(),
        });
    }
    (train, valid, test)
}

/// Finds the named columns of an atomic-file header (`name:type` fields). Returns their indices.
fn header_columns<const N: usize>(
    path: &Path,
    header: Option<(usize, &str)>,
    required: [&str; N],
) -> Result<([usize; N], Vec<String>)> {
    let Some((line_no, header)) = header else {
        return Err(Error::format(path, "empty file: expected a header line"));
    };
    let names: Vec<String> = header
        .split('\t')
        .map(|f| f.split(':').next().unwrap_or_default().trim().to_string())
        .collect();
    let mut idx = [0usize; N];
    for (k, want) in required.iter().enumerate() {
        idx[k] = names.iter().position(|n| n == want).ok_or_else(|| {
            Error::parse(
                path,
                line_no,
                format!(
                    "missing header column `{want}`: expected a header like `{}`",
                    required.map(|r| format!("{r}:token")).join("\\t")
                ),
            )
        })?;
    }
    Ok((idx, names))
}

/// Splits a data line into exactly `width` tab-separated fields (the header's count).
fn split_row<'a>(path: &Path, line_no: usize, line: &'a str, width: usize) -> Result<Vec<&'a str>> {
    let fields: Vec<&str> = line.split('\t').collect();
    if fields.len() != width {
        return Err(Error::parse(
            path,
            line_no,
            format!(
                "expected {width} tab-separated fields as in the header, found {}",
                fields.len()
            ),
        ));
    }
    Ok(fields)
}

type ItemTable = (HashMap<String, ItemId>, Vec<Item>, [Domain; 2]);

/// Reads `NAME.item`: returns the token to global id map, the catalogue and the domains.
fn read_item_file(path: &Path, expected: Option<&[String; 2]>) -> Result<ItemTable> {
    let text = read_text(path)?;
    let mut lines = numbered_lines(&text);
    let ([id_col, domain_col], names) = header_columns(path, lines.next(), ["item_id", "domain"])?;
    let title_col = names.iter().position(|n| n == "title");
    let mut domain_names: Vec<String> = expected.map(|e| e.to_vec()).unwrap_or_default();
    // (token, domain slot, item) in file order.
    let mut rows: Vec<(String, usize, Item)> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (line_no, line) in lines {
        if line.is_empty() {
            continue;
        }
        let fields = split_row(path, line_no, line, names.len())?;
        let token = fields[id_col].trim();
        if token.is_empty() {
            return Err(Error::parse(path, line_no, "empty item id"));
        }
        if let Some(first) = seen.insert(token.to_string(), line_no) {
            return Err(Error::parse(
                path,
                line_no,
                format!("duplicate item id {token:?} (first on line {first})"),
            ));
        }
        let domain = fields[domain_col].trim();
        let slot = match domain_names.iter().position(|d| d == domain) {
            Some(s) => s,
            None if expected.is_some() => {
                return Err(Error::parse(
                    path,
                    line_no,
                    format!(
                        "item {token:?} has unknown domain {domain:?}: expected {:?} or {:?}",
                        domain_names[0], domain_names[1]
                    ),
                ));
            }
            None if domain_names.len() == 2 => {
                return Err(Error::parse(
                    path,
                    line_no,
                    format!(
                        "item {token:?} has a third domain {domain:?} (after {:?} and {:?}): exactly two domains are supported",
                        domain_names[0], domain_names[1]
                    ),
                ));
            }
            None if domain.is_empty() => {
                return Err(Error::parse(
                    path,
                    line_no,
                    format!("item {token:?} has an empty domain"),
                ));
            }
            None => {
                domain_names.push(domain.to_string());
                domain_names.len() - 1
            }
        };
        let title = title_col
            .map(|c| fields[c].trim())
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        rows.push((
            token.to_string(),
            slot,
            Item {
                title,
                attributes: None,
                key: Some(token.to_string()),
            },
        ));
    }
    if rows.is_empty() {
        return Err(Error::format(path, "no items after the header"));
    }
    if domain_names.len() != 2 || rows.iter().all(|r| r.1 == 0) || rows.iter().all(|r| r.1 == 1) {
        let found: Vec<&str> = {
            let mut f: Vec<&str> = rows.iter().map(|r| domain_names[r.1].as_str()).collect();
            f.dedup();
            f.sort_unstable();
            f.dedup();
            f
        };
        return Err(Error::format(
            path,
            format!(
                "expected items of exactly two domains, found {}: {found:?}",
                found.len()
            ),
        ));
    }
    let n_x = rows.iter().filter(|r| r.1 == 0).count() as u32;
    let n_y = rows.len() as u32 - n_x;
    let mut tokens = HashMap::with_capacity(rows.len());
    let mut items = vec![Item::default(); rows.len()];
    let mut next = [0u32, n_x];
    for (token, slot, item) in rows {
        let id = next[slot];
        next[slot] += 1;
        items[id as usize] = item;
        tokens.insert(token, id);
    }
    let [x, y]: [String; 2] = [domain_names[0].clone(), domain_names[1].clone()];
    let domains = [
        Domain {
            name: x,
            start: 0,
            len: n_x,
        },
        Domain {
            name: y,
            start: n_x,
            len: n_y,
        },
    ];
    Ok((tokens, items, domains))
}

/// Reads `NAME.inter` into per-user sequences, users in order of first appearance, each
/// sequence stably sorted by timestamp.
fn read_inter_file(path: &Path, tokens: &HashMap<String, ItemId>) -> Result<Vec<Sequence>> {
    let text = read_text(path)?;
    let mut lines = numbered_lines(&text);
    let ([user_col, item_col, time_col], names) =
        header_columns(path, lines.next(), ["user_id", "item_id", "timestamp"])?;
    let mut users: HashMap<&str, usize> = HashMap::new();
    let mut seqs: Vec<Vec<(f64, ItemId)>> = Vec::new();
    for (line_no, line) in lines {
        if line.is_empty() {
            continue;
        }
        let fields = split_row(path, line_no, line, names.len())?;
        let user = fields[user_col].trim();
        if user.is_empty() {
            return Err(Error::parse(path, line_no, "empty user id"));
        }
        let token = fields[item_col].trim();
        let item = *tokens.get(token).ok_or_else(|| {
            Error::parse(
                path,
                line_no,
                format!(
                    "item {token:?} is not in the catalogue ({})",
                    path.with_extension("item").display()
                ),
            )
        })?;
        let time_str = fields[time_col].trim();
        let time: f64 = time_str
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite())
            .ok_or_else(|| {
                Error::parse(
                    path,
                    line_no,
                    format!("timestamp {time_str:?} is not a number"),
                )
            })?;
        let next = users.len();
        let u = *users.entry(user).or_insert(next);
        if u == seqs.len() {
            seqs.push(Vec::new());
        }
        seqs[u].push((time, item));
    }
    if seqs.is_empty() {
        return Err(Error::format(path, "no interactions after the header"));
    }
    Ok(seqs
        .into_iter()
        .enumerate()
        .map(|(u, mut s)| {
            s.sort_by(|a, b| a.0.total_cmp(&b.0));
            Sequence {
                user: u as u32,
                items: s.into_iter().map(|(_, i)| i).collect(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::{DomainId, Split};
    use std::fs;

    const ITEMS: &str = "item_id:token\tdomain:token\ttitle:token_seq\n\
        f1\tFood\tTea\nk1\tKitchen\tPot\nf2\tFood\t\nk2\tKitchen\tPan\n";
    const INTER: &str = "user_id:token\titem_id:token\ttimestamp:float\n\
        u1\tf1\t1\nu1\tk1\t3\nu1\tf2\t2\nu1\tk2\t3\nu2\tk1\t5\nu2\tf1\t6\n";

    fn write(dir: &Path, items: &str, inter: &str) {
        fs::write(dir.join("fk.item"), items).unwrap();
        fs::write(dir.join("fk.inter"), inter).unwrap();
    }

    fn load(dir: &Path) -> Result<Dataset> {
        load_recbole(dir, &RecboleOptions::default())
    }

    #[test]
    fn loads_and_splits_leave_one_out() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), ITEMS, INTER);
        let d = load(dir.path()).unwrap();
        assert_eq!(d.name(), "fk");
        assert_eq!(d.domain(DomainId::X).name, "Food");
        assert_eq!(d.domain(DomainId::X).len, 2);
        // Food: f1 = 0, f2 = 1; Kitchen: k1 = 2, k2 = 3.
        assert_eq!(d.items()[0].title.as_deref(), Some("Tea"));
        assert_eq!(d.items()[1].title, None);
        assert_eq!(d.items()[3].title.as_deref(), Some("Pan"));
        // u1 sorted by time: f1(1) f2(2) k1(3) k2(3, after k1 in file order).
        let test = d.examples(Split::Test);
        assert_eq!(test.len(), 1);
        assert_eq!(test[0].history, vec![0, 1, 2]);
        assert_eq!(test[0].target, 3);
        let valid = d.examples(Split::Valid);
        assert_eq!(valid[0].history, vec![0, 1]);
        assert_eq!(valid[0].target, 2);
        // u1 keeps f1 f2 for training; u2 (two interactions) trains on both.
        let train = d.train().unwrap();
        assert_eq!(train[0].items, vec![0, 1]);
        assert_eq!(train[1].items, vec![2, 0]);
    }

    #[test]
    fn max_history_keeps_most_recent() {
        let seq = Sequence {
            user: 0,
            items: vec![1, 2, 3, 4, 5, 6],
        };
        let (train, valid, test) = leave_one_out(vec![seq], 2);
        assert_eq!(train[0].items, vec![1, 2, 3, 4]);
        assert_eq!(valid[0].history, vec![3, 4]);
        assert_eq!(valid[0].target, 5);
        assert_eq!(test[0].history, vec![4, 5]);
        assert_eq!(test[0].target, 6);
    }

    fn expect_error(items: &str, inter: &str, needle: &str) {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), items, inter);
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }

    #[test]
    fn missing_header_in_inter() {
        expect_error(
            ITEMS,
            "u1\tf1\t1\n",
            "fk.inter:1: missing header column `user_id`",
        );
    }

    #[test]
    fn missing_header_in_item() {
        expect_error(
            "f1\tFood\tTea\n",
            INTER,
            "fk.item:1: missing header column `item_id`",
        );
    }

    #[test]
    fn empty_inter_file() {
        expect_error(ITEMS, "", "fk.inter: empty file");
    }

    #[test]
    fn header_only_inter_file() {
        expect_error(
            ITEMS,
            "user_id:token\titem_id:token\ttimestamp:float\n",
            "fk.inter: no interactions",
        );
    }

    #[test]
    fn empty_item_file() {
        expect_error("", INTER, "fk.item: empty file");
    }

    #[test]
    fn wrong_field_count() {
        let inter = "user_id:token\titem_id:token\ttimestamp:float\nu1\tf1\n";
        expect_error(ITEMS, inter, "fk.inter:2: expected 3 tab-separated fields");
    }

    #[test]
    fn non_numeric_timestamp() {
        let inter = "user_id:token\titem_id:token\ttimestamp:float\nu1\tf1\tnoon\n";
        expect_error(
            ITEMS,
            inter,
            "fk.inter:2: timestamp \"noon\" is not a number",
        );
    }

    #[test]
    fn item_not_in_catalogue() {
        let inter = "user_id:token\titem_id:token\ttimestamp:float\nu1\tf1\t1\nu1\tzz\t2\n";
        expect_error(
            ITEMS,
            inter,
            "fk.inter:3: item \"zz\" is not in the catalogue",
        );
    }

    #[test]
    fn duplicate_item() {
        let items = "item_id:token\tdomain:token\nf1\tFood\nk1\tKitchen\nf1\tFood\n";
        expect_error(
            items,
            INTER,
            "fk.item:4: duplicate item id \"f1\" (first on line 2)",
        );
    }

    #[test]
    fn third_domain() {
        let items = "item_id:token\tdomain:token\nf1\tFood\nk1\tKitchen\ng1\tGarden\n";
        expect_error(
            items,
            INTER,
            "fk.item:4: item \"g1\" has a third domain \"Garden\"",
        );
    }

    #[test]
    fn single_domain() {
        let items = "item_id:token\tdomain:token\nf1\tFood\nf2\tFood\n";
        expect_error(
            items,
            INTER,
            "fk.item: expected items of exactly two domains, found 1",
        );
    }

    #[test]
    fn unknown_domain_with_expected_names() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), ITEMS, INTER);
        let options = RecboleOptions {
            domain_names: Some(["Food".into(), "Garden".into()]),
            ..Default::default()
        };
        let err = load_recbole(dir.path(), &options).unwrap_err().to_string();
        assert!(
            err.contains("fk.item:3: item \"k1\" has unknown domain \"Kitchen\""),
            "{err}"
        );
    }

    #[test]
    fn several_inter_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), ITEMS, INTER);
        fs::write(dir.path().join("other.inter"), INTER).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("several .inter files"), "{err}");
    }

    #[test]
    fn missing_item_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("fk.inter"), INTER).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("fk.item"), "{err}");
    }
}
