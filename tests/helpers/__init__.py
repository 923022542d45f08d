"""What several test modules share beyond conftest's fixtures: toy data per task and ways to run ``ftlit``."""
