"""The Learn page's toys (exact, instant) and their figures."""
