"""How predictions are scored: metrics of one set of predictions (`metrics`), study-bootstrap intervals and
paired differences (`evidence`), the null simulation that measures the interval rule's error rates
(`simulation`), and split-conformal prediction sets (`conformal`). Nothing here knows about networks."""
