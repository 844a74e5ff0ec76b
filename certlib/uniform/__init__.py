"""The uniform-smoothing certificate: closed-form bounds, the certificate, the empirical check, figures."""
