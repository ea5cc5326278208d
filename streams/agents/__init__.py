"""Faust agents: thin loops that move data between topics, tables and the pure folds."""
