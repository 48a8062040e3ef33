"""Code shared by every task: data, seeding, run directories."""
