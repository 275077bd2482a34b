"""The shipped YAML configs (model, train, data, clean, eval, regmix), installed as the package data of
`sailor2_jax.configs` (pyproject.toml maps this directory there), so a wheel finds them from any directory."""
