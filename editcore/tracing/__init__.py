"""Where is the fact stored? Causal tracing (Meng et al. 2022) and a logit lens, before and after an edit."""
