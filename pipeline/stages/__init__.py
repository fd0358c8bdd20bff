"""The stages: one module per command a user types (check, smoke, train, merge, evaluate, runs), and report,
evaluate's helper. A stage reads top to bottom; stages never import each other (shared code goes down into
`pipeline.checks` or `pipeline.core`), and only `pipeline.commands` imports them."""
