"""Who may do what: passwords, tokens, users and login throttling."""
