"""Human-readable reports (Markdown + PNG) of SIEVE results."""
