"""Benchmarks of hyperplane (see README.md): a small runner and one module per topic."""
