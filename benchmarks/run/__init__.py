"""Running configurations: the run settings, studies and ablations, the checks before work starts,
and the worker that trains and evaluates one run in its own process."""
