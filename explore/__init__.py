"""Schedule exploration: the controlled environment, strategies, search, shrinking, replay."""
