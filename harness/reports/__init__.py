"""Reports over finished run directories: the one reader (rundirs), Pareto tables and plots,
the leaderboard markdown and the CI regression gate."""
