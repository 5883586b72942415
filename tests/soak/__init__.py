"""The reliability soak (`nox -s soak`) and its short version run by the test suite."""
