//! The README's snippets are the project's real code: the library example is
//! `examples/readme.rs` (CI runs it), line for line.

/// The lines of `example` between its README markers, unindented once.
fn snippet(example: &str) -> String {
    let body = example
        .split("// README:begin\n")
        .nth(1)
        .and_then(|rest| rest.split("    // README:end").next())
        .expect("markers in examples/readme.rs");
    body.lines().map(|l| l.strip_prefix("    ").unwrap_or(l)).map(|l| format!("{l}\n")).collect()
}

#[test]
fn the_readme_library_example_is_examples_readme_rs() {
    let readme = include_str!("../README.md");
    let snippet = snippet(include_str!("../examples/readme.rs"));
    assert!(
        readme.contains(&format!("```rust\n{snippet}```")),
        "README differs from examples/readme.rs:\n{snippet}"
    );
}

#[test]
fn the_readme_hand_composed_stack_is_examples_axum_route_service_rs() {
    let readme = include_str!("../README.md");
    let snippet = snippet(include_str!("../examples/axum_route_service.rs"));
    assert!(
        readme.contains(&format!("```rust\n{snippet}```")),
        "README differs from examples/axum_route_service.rs:\n{snippet}"
    );
}
