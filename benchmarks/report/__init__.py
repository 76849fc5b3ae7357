"""The report of a study: the answer in words first, then the tables and figures."""
