"""Every method against the exact targets at equal compute (``toycode leaderboard``)."""
