//! The README's snippets are the project's real code: the library example is
//! `examples/readme.rs` (CI runs it), line for line.

#[test]
fn the_readme_library_example_is_examples_readme_rs() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/readme.rs");
    let body = example
        .split("// README:begin\n")
        .nth(1)
        .and_then(|rest| rest.split("    // README:end").next())
        .expect("markers in examples/readme.rs");
    let snippet: String =
        body.lines().map(|l| l.strip_prefix("    ").unwrap_or(l)).map(|l| format!("{l}\n")).collect();
    assert!(
        readme.contains(&format!("```rust\n{snippet}```")),
        "README differs from examples/readme.rs:\n{snippet}"
    );
}
