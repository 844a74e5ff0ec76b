"""The sampling stage shared by every certificate: seeded noise, the streaming engine, top-K maps, the pixel counts
and the uniform mean."""
