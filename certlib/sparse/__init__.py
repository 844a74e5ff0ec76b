"""Sparsified SmoothGrad: the certified top-K overlap, the empirical check, figures."""
