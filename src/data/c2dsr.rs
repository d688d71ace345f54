//! Reader for the C2DSR directory format (`Alist.txt`, `Blist.txt`, `userlist.txt`,
//! `traindata_new.txt`, `validdata_new.txt`, `testdata_new.txt`, and the optional `items.tsv`).
//!
//! - Domain sizes are the line counts of `Alist.txt` (X) and `Blist.txt` (Y); global ids are
//!   `[0, n_x)` for X and `[n_x, n_x + n_y)` for Y.
//! - A sequence line is `user \t sequence_index \t item|time|... \t item|time|... [\t]`. Its
//!   interactions are sorted by time with a stable sort (file order breaks ties); the last
//!   interaction of a valid/test line is the target, the rest its history.
//! - Without `traindata_new.txt` the directory loads for evaluation only.

use std::path::Path;

use super::dataset::{Dataset, Domain, Example, Item, ItemId, Sequence, TrainingData};
use crate::error::{Error, Result};
use crate::io::{numbered_lines, read_text};

/// Where the C2DSR training files are published, for the error raised when one is missing.
pub const TRAIN_FILE_HINT: &str = "the C2DSR training files (traindata_new.txt of Movie-Book and \
Food-Kitchen) are published only in the shared drive folder linked from the C2DSR repository \
(github.com/cjx96/C2DSR); download it into the dataset directory. Movie-Book's copy has git blob \
hash ac129295471de1a2dfdbbabbee0cd97641182650 (check with `git hash-object traindata_new.txt`)";

/// Options of the C2DSR reader.
#[derive(Debug, Clone, Default)]
pub struct C2dsrOptions {
    /// Names of domains X and Y. Default: from `items.tsv` when present, else from the directory
    /// name (`movie-book` gives `Movie` and `Book`), else `X` and `Y`.
    pub domain_names: Option<[String; 2]>,
}

/// Whether `dir` looks like a C2DSR directory.
pub fn is_c2dsr_dir(dir: &Path) -> bool {
    dir.join("Alist.txt").is_file() && dir.join("Blist.txt").is_file()
}

/// Loads a C2DSR directory.
pub fn load_c2dsr(dir: &Path, options: &C2dsrOptions) -> Result<Dataset> {
    let n_x = count_item_lines(&dir.join("Alist.txt"))?;
    let n_y = count_item_lines(&dir.join("Blist.txt"))?;
    let n = n_x + n_y;

    let items_path = dir.join("items.tsv");
    let (items, tsv_names) = if items_path.is_file() {
        let (items, names) = read_items_tsv(&items_path, n_x, n, options.domain_names.as_ref())?;
        (items, Some(names))
    } else {
        (vec![Item::default(); n as usize], None)
    };
    let names = options
        .domain_names
        .clone()
        .or(tsv_names)
        .unwrap_or_else(|| names_from_dir(dir));

    let train_path = dir.join("traindata_new.txt");
    let train = if train_path.is_file() {
        let seqs = read_sequences(&train_path, n)?
            .into_iter()
            .map(|(_, user, items)| Sequence { user, items })
            .collect();
        TrainingData::Present(seqs)
    } else {
        TrainingData::Missing {
            path: train_path,
            hint: TRAIN_FILE_HINT.to_string(),
        }
    };
    let valid = read_examples(&dir.join("validdata_new.txt"), n)?;
    let test = read_examples(&dir.join("testdata_new.txt"), n)?;

    let [x_name, y_name] = names;
    let domains = [
        Domain {
            name: x_name,
            start: 0,
            len: n_x,
        },
        Domain {
            name: y_name,
            start: n_x,
            len: n_y,
        },
    ];
    Dataset::new(dataset_name(dir), domains, items, train, valid, test)
}

/// The last component of `dir`, or "dataset".
pub(crate) fn dataset_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "dataset".into())
}

/// `movie-book` gives `["Movie", "Book"]`; anything else gives `["X", "Y"]`.
fn names_from_dir(dir: &Path) -> [String; 2] {
    let name = dataset_name(dir);
    let parts: Vec<&str> = name.split(['-', '_']).filter(|p| !p.is_empty()).collect();
    let capitalise = |s: &str| {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect())
            .unwrap_or_default()
    };
    match parts.as_slice() {
        [a, b] => [capitalise(a), capitalise(b)],
        _ => ["X".into(), "Y".into()],
    }
}

/// Counts the item lines of `Alist.txt`/`Blist.txt`, checking each has the three fields
/// `original_id \t asin \t id`.
fn count_item_lines(path: &Path) -> Result<u32> {
    let text = read_text(path)?;
    let mut count = 0u32;
    for (line_no, line) in numbered_lines(&text) {
        if line.trim().is_empty() {
            continue;
        }
        let fields = line.split('\t').count();
        if fields != 3 {
            return Err(Error::parse(
                path,
                line_no,
                format!("expected 3 tab-separated fields (original_id, asin, id), found {fields}"),
            ));
        }
        count += 1;
    }
    if count == 0 {
        return Err(Error::format(
            path,
            "empty file: expected one line per item",
        ));
    }
    Ok(count)
}

/// Reads `items.tsv` (`item_id \t domain \t title [\t attributes]`, with a header). Returns the
/// catalogue and the two domain names found.
fn read_items_tsv(
    path: &Path,
    n_x: u32,
    n: u32,
    expected: Option<&[String; 2]>,
) -> Result<(Vec<Item>, [String; 2])> {
    let text = read_text(path)?;
    let mut lines = numbered_lines(&text);
    match lines.next() {
        Some((_, header)) if header.split('\t').next() == Some("item_id") => {}
        Some((line_no, _)) => {
            return Err(Error::parse(
                path,
                line_no,
                "missing header: expected `item_id\\tdomain\\ttitle[\\tattributes]`",
            ));
        }
        None => {
            return Err(Error::format(
                path,
                "empty file: expected a header and one line per item",
            ));
        }
    }
    let mut items = vec![Item::default(); n as usize];
    let mut seen = vec![false; n as usize];
    let mut names: [Option<String>; 2] = match expected {
        Some([a, b]) => [Some(a.clone()), Some(b.clone())],
        None => [None, None],
    };
    for (line_no, line) in lines {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if !(3..=4).contains(&fields.len()) {
            return Err(Error::parse(
                path,
                line_no,
                format!(
                    "expected 3 or 4 tab-separated fields (item_id, domain, title[, attributes]), found {}",
                    fields.len()
                ),
            ));
        }
        let id: ItemId = fields[0].parse().map_err(|_| {
            Error::parse(
                path,
                line_no,
                format!("item id {:?} is not a non-negative integer", fields[0]),
            )
        })?;
        if id >= n {
            return Err(Error::parse(
                path,
                line_no,
                format!("item {id} is outside the catalogue of {n} items (Alist.txt + Blist.txt)"),
            ));
        }
        if std::mem::replace(&mut seen[id as usize], true) {
            return Err(Error::parse(
                path,
                line_no,
                format!("duplicate item id {id}"),
            ));
        }
        let domain = fields[1];
        let slot = usize::from(id >= n_x);
        match &names[slot] {
            Some(name) if name == domain => {}
            Some(name) => {
                let other = names[1 - slot].as_deref();
                let message = if other == Some(domain) {
                    format!(
                        "item {id} has domain {domain:?}, but its id lies in the range of domain {name:?}"
                    )
                } else {
                    format!(
                        "item {id} has unknown domain {domain:?}: expected {name:?} for ids {}",
                        if slot == 0 {
                            format!("below {n_x}")
                        } else {
                            format!("from {n_x}")
                        }
                    )
                };
                return Err(Error::parse(path, line_no, message));
            }
            None => {
                if names[1 - slot].as_deref() == Some(domain) {
                    return Err(Error::parse(
                        path,
                        line_no,
                        format!(
                            "item {id} has domain {domain:?}, but its id lies in the range of the other domain"
                        ),
                    ));
                }
                names[slot] = Some(domain.to_string());
            }
        }
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.to_string());
        items[id as usize] = Item {
            title: non_empty(fields[2]),
            attributes: fields.get(3).and_then(|s| non_empty(s)),
            key: None,
        };
    }
    let [a, b] = names;
    let names = [
        a.unwrap_or_else(|| "X".into()),
        b.unwrap_or_else(|| "Y".into()),
    ];
    Ok((items, names))
}

/// Parses a sequence file into `(line number, user, time-ordered items)`.
fn read_sequences(path: &Path, n: u32) -> Result<Vec<(usize, u32, Vec<ItemId>)>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (line_no, line) in numbered_lines(&text) {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let interactions: Vec<&str> = fields
            .iter()
            .skip(2)
            .copied()
            .filter(|f| !f.is_empty())
            .collect();
        if fields.len() < 3 || interactions.is_empty() {
            return Err(Error::parse(
                path,
                line_no,
                format!(
                    "expected `user \\t sequence_index \\t item|time|...` with at least one interaction, found {} field(s)",
                    fields.len()
                ),
            ));
        }
        let user: u32 = fields[0].trim().parse().map_err(|_| {
            Error::parse(
                path,
                line_no,
                format!("user index {:?} is not a non-negative integer", fields[0]),
            )
        })?;
        fields[1].trim().parse::<u64>().map_err(|_| {
            Error::parse(
                path,
                line_no,
                format!(
                    "sequence index {:?} is not a non-negative integer",
                    fields[1]
                ),
            )
        })?;
        let mut timed = Vec::with_capacity(interactions.len());
        for (k, field) in interactions.iter().enumerate() {
            let mut parts = field.split('|');
            let item_str = parts.next().unwrap_or_default();
            let time_str = parts.next().ok_or_else(|| {
                Error::parse(
                    path,
                    line_no,
                    format!(
                        "interaction {} ({field:?}) has no time: expected `item|time|...`",
                        k + 1
                    ),
                )
            })?;
            let item: ItemId = item_str.trim().parse().map_err(|_| {
                Error::parse(
                    path,
                    line_no,
                    format!(
                        "interaction {}: item id {item_str:?} is not a non-negative integer",
                        k + 1
                    ),
                )
            })?;
            if item >= n {
                return Err(Error::parse(
                    path,
                    line_no,
                    format!(
                        "interaction {}: item {item} is outside the catalogue of {n} items (Alist.txt + Blist.txt)",
                        k + 1
                    ),
                ));
            }
            let time: f64 = time_str
                .trim()
                .parse()
                .ok()
                .filter(|t: &f64| t.is_finite())
                .ok_or_else(|| {
                    Error::parse(
                        path,
                        line_no,
                        format!("interaction {}: time {time_str:?} is not a number", k + 1),
                    )
                })?;
            timed.push((time, item));
        }
        // Stable: equal times keep file order.
        timed.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.push((line_no, user, timed.into_iter().map(|(_, i)| i).collect()));
    }
    if out.is_empty() {
        return Err(Error::format(
            path,
            "empty file: expected one sequence per line",
        ));
    }
    Ok(out)
}

/// Parses a valid/test file: the last interaction of each line is its target.
fn read_examples(path: &Path, n: u32) -> Result<Vec<Example>> {
    Ok(read_sequences(path, n)?
        .into_iter()
        .map(|(_, user, mut items)| {
            // `read_sequences` guarantees at least one interaction per line.
            let target = items.pop().unwrap_or_default();
            Example {
                user,
                history: items,
                target,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::{DomainId, Split};
    use std::fs;

    /// Writes a small valid C2DSR directory (3 X items, 2 Y items) and returns it.
    pub(crate) fn write_tiny(dir: &Path) {
        fs::write(dir.join("Alist.txt"), "10\ta\t0\n11\tb\t1\n12\tc\t2\n").unwrap();
        fs::write(dir.join("Blist.txt"), "20\td\t0\n21\te\t1\n").unwrap();
        fs::write(dir.join("userlist.txt"), "u0\t0\nu1\t1\n").unwrap();
        fs::write(
            dir.join("traindata_new.txt"),
            "0\t0\t1|20|d|\t3|10|d|\t0|10|d|\t\n1\t1\t4|1|d|\t2|2|d|\n",
        )
        .unwrap();
        fs::write(
            dir.join("validdata_new.txt"),
            "0\t2\t3|5|d|\t1|7|d|\t4|6|d|\n",
        )
        .unwrap();
        fs::write(dir.join("testdata_new.txt"), "1\t3\t2|1|d|\t0|2|d|\n").unwrap();
        fs::write(
            dir.join("items.tsv"),
            "item_id\tdomain\ttitle\n0\tArt\tfirst\n1\tArt\t\n3\tOffice\tpen\tblue ink\n",
        )
        .unwrap();
    }

    fn load(dir: &Path) -> Result<Dataset> {
        load_c2dsr(dir, &C2dsrOptions::default())
    }

    #[test]
    fn loads_and_sorts_by_time_stably() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny(dir.path());
        let d = load(dir.path()).unwrap();
        assert_eq!(d.domain(DomainId::X).len, 3);
        assert_eq!(d.domain(DomainId::Y).start, 3);
        assert_eq!(d.domain(DomainId::X).name, "Art");
        assert_eq!(d.domain(DomainId::Y).name, "Office");
        let train = d.train().unwrap();
        // times 20, 10, 10: the two 10s keep file order (3 then 0).
        assert_eq!(train[0].items, vec![3, 0, 1]);
        assert_eq!(train[1].items, vec![4, 2]);
        let valid = &d.examples(Split::Valid)[0];
        assert_eq!(valid.history, vec![3, 4]);
        assert_eq!(valid.target, 1);
        assert_eq!(d.examples(Split::Test)[0].target, 0);
        assert_eq!(d.items()[0].title.as_deref(), Some("first"));
        assert_eq!(d.items()[1].title, None);
        assert_eq!(d.items()[3].attributes.as_deref(), Some("blue ink"));
    }

    #[test]
    fn missing_training_file_loads_for_evaluation() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny(dir.path());
        fs::remove_file(dir.path().join("traindata_new.txt")).unwrap();
        let d = load(dir.path()).unwrap();
        let err = d.train().unwrap_err().to_string();
        assert!(err.contains("traindata_new.txt"), "{err}");
        assert!(err.contains("github.com/cjx96/C2DSR"), "{err}");
    }

    fn expect_error(file: &str, content: &str, needle: &str) {
        let dir = tempfile::tempdir().unwrap();
        write_tiny(dir.path());
        fs::write(dir.path().join(file), content).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(file), "error should name {file}: {err}");
        assert!(
            err.contains(needle),
            "error should contain {needle:?}: {err}"
        );
    }

    #[test]
    fn wrong_field_count_in_sequence() {
        expect_error(
            "validdata_new.txt",
            "0\t2\t3|5|d|\n0\t2\n",
            "validdata_new.txt:2: expected",
        );
    }

    #[test]
    fn non_numeric_item() {
        expect_error(
            "testdata_new.txt",
            "1\t3\tx|1|d|\n",
            "testdata_new.txt:1: interaction 1: item id",
        );
    }

    #[test]
    fn non_numeric_time() {
        expect_error(
            "traindata_new.txt",
            "0\t0\t1|soon|d|\n",
            "traindata_new.txt:1: interaction 1: time",
        );
    }

    #[test]
    fn non_numeric_user() {
        expect_error(
            "traindata_new.txt",
            "u\t0\t1|2|d|\n",
            "traindata_new.txt:1: user index",
        );
    }

    #[test]
    fn item_outside_catalogue() {
        expect_error(
            "traindata_new.txt",
            "0\t0\t1|2|d|\n0\t1\t5|2|d|\n",
            "traindata_new.txt:2: interaction 1: item 5 is outside",
        );
    }

    #[test]
    fn empty_sequence_file() {
        expect_error("testdata_new.txt", "", "empty file");
    }

    #[test]
    fn empty_item_list() {
        expect_error("Blist.txt", "\n", "empty file");
    }

    #[test]
    fn wrong_field_count_in_item_list() {
        expect_error("Alist.txt", "10\ta\t0\n11\tb\n", "Alist.txt:2: expected 3");
    }

    #[test]
    fn items_tsv_missing_header() {
        expect_error(
            "items.tsv",
            "0\tArt\tfirst\n",
            "items.tsv:1: missing header",
        );
    }

    #[test]
    fn items_tsv_duplicate_id() {
        expect_error(
            "items.tsv",
            "item_id\tdomain\ttitle\n0\tArt\ta\n0\tArt\tb\n",
            "items.tsv:3: duplicate item id 0",
        );
    }

    #[test]
    fn items_tsv_unknown_domain() {
        expect_error(
            "items.tsv",
            "item_id\tdomain\ttitle\n0\tArt\ta\n3\tOffice\tb\n4\tGarden\tc\n",
            "items.tsv:4: item 4 has unknown domain \"Garden\"",
        );
    }

    #[test]
    fn items_tsv_domain_in_wrong_range() {
        expect_error(
            "items.tsv",
            "item_id\tdomain\ttitle\n0\tArt\ta\n3\tOffice\tb\n1\tOffice\tc\n",
            "items.tsv:4: item 1 has domain \"Office\", but its id lies in the range of domain \"Art\"",
        );
    }

    #[test]
    fn items_tsv_id_outside_catalogue() {
        expect_error(
            "items.tsv",
            "item_id\tdomain\ttitle\n7\tArt\ta\n",
            "items.tsv:2: item 7 is outside",
        );
    }

    #[test]
    fn items_tsv_non_numeric_id() {
        expect_error(
            "items.tsv",
            "item_id\tdomain\ttitle\nseven\tArt\ta\n",
            "items.tsv:2: item id",
        );
    }

    #[test]
    fn items_tsv_field_count() {
        expect_error(
            "items.tsv",
            "item_id\tdomain\ttitle\n0\tArt\n",
            "items.tsv:2: expected 3 or 4",
        );
    }

    #[test]
    fn missing_valid_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny(dir.path());
        fs::remove_file(dir.path().join("validdata_new.txt")).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("validdata_new.txt"), "{err}");
    }

    #[test]
    fn names_from_directory() {
        assert_eq!(
            names_from_dir(Path::new("/nonexistent/movie-book")),
            ["X", "Y"]
        );
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("food-kitchen");
        fs::create_dir(&sub).unwrap();
        assert_eq!(names_from_dir(&sub), ["Food", "Kitchen"]);
    }
}
