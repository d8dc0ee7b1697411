"""Network definitions of the zoo, one module per family, and the code that trains or
loads their weights.  :mod:`sieve.zoo` is the public entry point."""
