"""sql/ files to the database, exactly once: files (the model, discover, the lexer), new, ledger, lock, runner."""
