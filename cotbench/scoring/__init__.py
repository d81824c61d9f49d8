"""Answers out of model text, and verdicts: the named extractors (strict / default / flexible per answer
type), the scorer, and the part of a response a judge grades (a task's judge reads the verdict). Pure functions; datasets, the runner, the analyzer and
the importer of published generations all read outputs through them."""
