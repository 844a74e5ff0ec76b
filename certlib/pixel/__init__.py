"""The pixel certificate: decision, anytime and progressive runs, per-pixel radii, the prediction certificate,
guarantee and advice in words, the empirical check, figures."""
