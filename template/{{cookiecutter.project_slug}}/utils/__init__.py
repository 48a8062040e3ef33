"""Research code every task shares: data loading and caching, seeding."""
