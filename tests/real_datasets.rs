//! Loads the three real datasets of `../shared/data` (or `$LLM_EMF_DATA_DIR`) and checks the
//! counts published in its README (Table 1 of the paper for Movie-Book).

use std::path::PathBuf;

use llm_emf::data::{DomainId, Split, load_dataset};

fn data_dir(name: &str) -> PathBuf {
    let root = std::env::var_os("LLM_EMF_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let dir = root.join(name);
    assert!(
        dir.is_dir(),
        "{} not found: these tests read the real datasets from ../shared/data (or set LLM_EMF_DATA_DIR)",
        dir.display()
    );
    dir
}

fn targets(d: &llm_emf::data::Dataset, split: Split) -> [usize; 2] {
    let s = d.stats();
    let get = |i: usize| match split {
        Split::Valid => s.domains[i].valid_targets,
        Split::Test => s.domains[i].test_targets,
    };
    [get(0), get(1)]
}

#[test]
fn movie_book_matches_table_1() {
    let d = load_dataset(&data_dir("movie-book")).unwrap();
    assert_eq!(d.domain(DomainId::X).len, 36_845);
    assert_eq!(d.domain(DomainId::Y).len, 63_937);
    assert_eq!(d.domain(DomainId::X).name, "Movie");
    assert_eq!(d.domain(DomainId::Y).name, "Book");
    assert_eq!(targets(&d, Split::Valid), [2_032, 5_612]);
    assert_eq!(targets(&d, Split::Test), [1_978, 5_730]);
    // The training file is not distributed: evaluation-only, with a clear error.
    assert!(!d.has_train());
    let err = d.train().unwrap_err().to_string();
    assert!(
        err.contains("traindata_new.txt") && err.contains("C2DSR"),
        "{err}"
    );
    let stats = d.stats();
    assert_eq!(stats.domains[0].titled_items, 12_073);
    assert_eq!(stats.domains[1].titled_items, 0);
}

#[test]
fn art_office_matches_the_readme() {
    let d = load_dataset(&data_dir("art-office")).unwrap();
    assert_eq!(d.domain(DomainId::X).len, 18_639);
    assert_eq!(d.domain(DomainId::Y).len, 19_757);
    assert_eq!(d.train().unwrap().len(), 16_000);
    assert_eq!(targets(&d, Split::Valid), [601, 553]);
    assert_eq!(targets(&d, Split::Test), [1_050, 950]);
    let stats = d.stats();
    assert_eq!(stats.domains[0].titled_items, 18_639);
    assert_eq!(stats.domains[1].titled_items, 19_757);
    assert!(d.items().iter().all(|i| i.attributes.is_some()));
}

#[test]
fn food_kitchen_matches_the_readme() {
    let d = load_dataset(&data_dir("food-kitchen")).unwrap();
    assert_eq!(d.domain(DomainId::X).name, "Food");
    assert_eq!(d.domain(DomainId::X).len, 11_837);
    assert_eq!(d.domain(DomainId::Y).len, 16_258);
    let train = d.train().unwrap();
    assert_eq!(train.len(), 7_144);
    assert_eq!(targets(&d, Split::Valid), [2_837, 4_307]);
    assert_eq!(targets(&d, Split::Test), [2_419, 4_725]);
    // All interactions: training + the valid and test targets.
    let stats = d.stats();
    let food = stats.domains[0].train_interactions.unwrap() + 2_837 + 2_419;
    let kitchen = stats.domains[1].train_interactions.unwrap() + 4_307 + 4_725;
    assert_eq!((food, kitchen), (83_663, 89_885));
    assert_eq!(
        stats.domains[0].titled_items + stats.domains[1].titled_items,
        23_357
    );
    // Histories are the sequence before the target, at most 50 items.
    assert!(
        d.examples(Split::Test)
            .iter()
            .all(|e| e.history.len() <= 50)
    );
    for (v, t) in d.examples(Split::Valid).iter().zip(d.examples(Split::Test)) {
        assert_eq!(v.user, t.user);
        assert_eq!(t.history.last(), Some(&v.target));
    }
}
