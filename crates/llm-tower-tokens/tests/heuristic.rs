//! The heuristic's error against exact o200k counts on the shipped corpus.

use llm_tower_tokens::{Family, Heuristic, Tiktoken, TokenCounter};

fn corpus() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn heuristic_stays_within_its_documented_bound() {
    let exact = Tiktoken::new(Family::O200k).unwrap();
    let h = Heuristic::default();
    let (mut total_exact, mut total_est) = (0u64, 0u64);
    let mut report = String::new();
    for (name, text) in corpus() {
        let (e, g) = (exact.count_text(&text), h.count_text(&text));
        let err = (f64::from(g) - f64::from(e)) / f64::from(e);
        report.push_str(&format!("{name}: exact {e}, estimate {g}, error {:+.1}%\n", err * 100.0));
        assert!(err.abs() <= 0.25, "{name} outside ±25 %:\n{report}");
        total_exact += u64::from(e);
        total_est += u64::from(g);
    }
    let overall = (total_est as f64 - total_exact as f64) / total_exact as f64;
    println!("{report}overall {:+.1}%", overall * 100.0);
    assert!(overall.abs() <= 0.10, "corpus outside ±10 %: {overall}\n{report}");
    assert!(corpus().len() >= 7, "the corpus covers prose, code, JSON and four languages");
}
