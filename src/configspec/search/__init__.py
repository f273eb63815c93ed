"""Search over the joint configuration space: enumerate, evaluate, constrain, pick, Pareto."""
