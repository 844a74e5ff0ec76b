"""Choices shared by the pages' controls, so the same slider offers the same values everywhere."""

ALPHAS = [0.1, 0.05, 0.01, 1e-3, 1e-4, 1e-5, 1e-6]        # error probabilities offered by every α slider
